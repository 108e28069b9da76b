package main

import (
	"context"
	"fmt"
)

// cmdServe is filled in by the issue that builds this component.
func cmdServe(_ context.Context, args []string) error {
	f := newFlags("serve", "serve [flags]")
	if err := f.parse(args); err != nil {
		return err
	}
	return fmt.Errorf("%w", errNotYet)
}
