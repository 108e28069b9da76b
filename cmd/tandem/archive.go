package main

import (
	"context"
	"fmt"
)

// cmdArchive is filled in by the issue that builds this component.
func cmdArchive(_ context.Context, args []string) error {
	f := newFlags("archive", "archive [flags]")
	if err := f.parse(args); err != nil {
		return err
	}
	return fmt.Errorf("%w", errNotYet)
}
