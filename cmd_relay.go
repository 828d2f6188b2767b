package main

import (
	"context"
	"errors"
)

// runRelay is replaced by the relay command (relay issue).
func runRelay(ctx context.Context, args []string) error { return errors.New("not built yet") }
