package main

import (
	"context"
	"fmt"
)

// cmdIngest is filled in by the issue that builds this component.
func cmdIngest(_ context.Context, args []string) error {
	f := newFlags("ingest", "ingest [flags]")
	if err := f.parse(args); err != nil {
		return err
	}
	return fmt.Errorf("%w", errNotYet)
}
