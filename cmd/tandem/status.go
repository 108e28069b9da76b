package main

import (
	"context"
	"fmt"
)

// cmdStatus is filled in by the issue that builds this component.
func cmdStatus(_ context.Context, args []string) error {
	f := newFlags("status", "status [flags]")
	if err := f.parse(args); err != nil {
		return err
	}
	return fmt.Errorf("%w", errNotYet)
}
