package main

import (
	"context"
	"fmt"
)

// cmdSpeed is filled in by the issue that builds this component.
func cmdSpeed(_ context.Context, args []string) error {
	f := newFlags("speed", "speed [flags]")
	if err := f.parse(args); err != nil {
		return err
	}
	return fmt.Errorf("%w", errNotYet)
}
