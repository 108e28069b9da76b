package main

import (
	"context"
	"fmt"
)

// cmdDev is filled in by the issue that builds this component.
func cmdDev(_ context.Context, args []string) error {
	f := newFlags("dev", "dev [flags]")
	if err := f.parse(args); err != nil {
		return err
	}
	return fmt.Errorf("%w", errNotYet)
}
