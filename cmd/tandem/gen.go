package main

import (
	"context"
	"fmt"
)

// cmdGen is filled in by the issue that builds this component.
func cmdGen(_ context.Context, args []string) error {
	f := newFlags("gen", "gen [flags]")
	if err := f.parse(args); err != nil {
		return err
	}
	return fmt.Errorf("%w", errNotYet)
}
