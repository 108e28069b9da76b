package main

import (
	"context"
	"fmt"
)

// cmdMigrate is filled in by the issue that builds this component.
func cmdMigrate(_ context.Context, args []string) error {
	f := newFlags("migrate", "migrate [flags]")
	if err := f.parse(args); err != nil {
		return err
	}
	return fmt.Errorf("%w", errNotYet)
}
