package main

import (
	"context"
	"fmt"
)

// cmdBatch is filled in by the issue that builds this component.
func cmdBatch(_ context.Context, args []string) error {
	f := newFlags("batch", "batch [flags]")
	if err := f.parse(args); err != nil {
		return err
	}
	return fmt.Errorf("%w", errNotYet)
}
