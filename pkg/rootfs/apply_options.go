package rootfs

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
)

// ApplyOption configures [Apply] (and [Flatten], which passes them on to Apply).
type ApplyOption func(*applyOptions) error

// Limits bound what one layer may make Apply do or allocate. A zero field means the default.
type Limits struct {
	MaxEntries    int64 // tar entries per layer (default 4Mi)
	MaxTotalBytes int64 // sum of regular file sizes per layer (default 1 TiB)
	MaxFileSize   int64 // one regular file (default 64 GiB)
	MaxPathLen    int   // bytes in an entry name or link target (default 4096, PATH_MAX)
	MaxPathDepth  int   // components in an entry name (default 512)
	MaxXattrSize  int   // bytes of one xattr value (default 64 KiB, XATTR_SIZE_MAX)
}

// DefaultLimits are the limits used when no [WithLimits] option is given.
var DefaultLimits = Limits{
	MaxEntries:    4 << 20,
	MaxTotalBytes: 1 << 40,
	MaxFileSize:   64 << 30,
	MaxPathLen:    4096,
	MaxPathDepth:  512,
	MaxXattrSize:  64 << 10,
}

type applyOptions struct {
	logger   *slog.Logger
	limits   Limits
	rootless bool
	inOrder  bool
}

// WithLogger sets where Apply reports warnings (skipped device nodes, dropped xattrs). The
// default discards them.
func WithLogger(l *slog.Logger) ApplyOption {
	return func(o *applyOptions) error {
		if l == nil {
			return errors.New("nil logger")
		}
		o.logger = l
		return nil
	}
}

// WithLimits overrides the default [Limits]; zero fields keep their defaults.
func WithLimits(l Limits) ApplyOption {
	return func(o *applyOptions) error {
		if l.MaxEntries < 0 || l.MaxTotalBytes < 0 || l.MaxFileSize < 0 || l.MaxPathLen < 0 ||
			l.MaxPathDepth < 0 || l.MaxXattrSize < 0 {
			return fmt.Errorf("negative limit in %+v", l)
		}
		set := func(dst *int64, v int64) {
			if v > 0 {
				*dst = v
			}
		}
		seti := func(dst *int, v int) {
			if v > 0 {
				*dst = v
			}
		}
		set(&o.limits.MaxEntries, l.MaxEntries)
		set(&o.limits.MaxTotalBytes, l.MaxTotalBytes)
		set(&o.limits.MaxFileSize, l.MaxFileSize)
		seti(&o.limits.MaxPathLen, l.MaxPathLen)
		seti(&o.limits.MaxPathDepth, l.MaxPathDepth)
		seti(&o.limits.MaxXattrSize, l.MaxXattrSize)
		return nil
	}
}

// WithLayersInOrder makes [Flatten] and [Cache.Ensure] apply the layers one after the other
// instead of concurrently: for an image known to need it ([ErrNeedsLowers], e.g. from
// [Cache.Snapshots]), which would otherwise be found out again by a concurrent attempt.
// [Apply] ignores it.
func WithLayersInOrder() ApplyOption {
	return func(o *applyOptions) error {
		o.inOrder = true
		return nil
	}
}

func makeApplyOptions(opts []ApplyOption) (*applyOptions, error) {
	o := &applyOptions{
		logger:   slog.New(slog.DiscardHandler),
		limits:   DefaultLimits,
		rootless: os.Geteuid() != 0,
	}
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, fmt.Errorf("apply option: %w", err)
		}
	}
	return o, nil
}
