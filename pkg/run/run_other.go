//go:build !linux

package run

import (
	"context"
	"errors"
	"fmt"
)

// MaybeInit does nothing: runs need Linux.
func MaybeInit() {}

// Run is not supported on this system: containers need Linux namespaces.
func Run(ctx context.Context, spec Spec, stdio Stdio) error {
	_, err := RunStats(ctx, spec, stdio)
	return err
}

// RunStats is not supported on this system: containers need Linux namespaces.
func RunStats(ctx context.Context, spec Spec, stdio Stdio) (*Stats, error) {
	return nil, fmt.Errorf("run: %w: containers need Linux", errors.ErrUnsupported)
}
