package main

import (
	"context"
	"fmt"
)

// cmdExport is filled in by the issue that builds this component.
func cmdExport(_ context.Context, args []string) error {
	f := newFlags("export", "export [flags]")
	if err := f.parse(args); err != nil {
		return err
	}
	return fmt.Errorf("%w", errNotYet)
}
