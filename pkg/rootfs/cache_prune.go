package rootfs

import (
	"context"
	"errors"

	"github.com/opencontainers/go-digest"
)

// Prune removes what interrupted builds left in tmp/ ([Cache.Clean]) and every tree whose key
// keep rejects, except trees in use (held with [Cache.Acquire] or being built), which stay
// for a later Prune. It returns how many trees it removed. `imgrun gc` keeps the trees of the
// images still in the store's index.
func (c *Cache) Prune(ctx context.Context, keep func(digest.Digest) bool) (removed int, err error) {
	if err := c.Clean(ctx); err != nil {
		return 0, err
	}
	keys, err := c.List(ctx)
	if err != nil {
		return 0, err
	}
	for _, k := range keys {
		if keep(k) {
			continue
		}
		switch err := c.Remove(ctx, k); {
		case err == nil:
			removed++
		case errors.Is(err, ErrInUse), errors.Is(err, ErrNotCached):
			// a run uses it, or another Prune got there first
		default:
			return removed, err
		}
	}
	return removed, nil
}
