package rootfs

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/imgrun/imgrun/internal/flock"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// ChainIDs returns the chain IDs of a stack of layers given their diffIDs, bottom first (OCI
// image-spec config.md): ChainID(1) = DiffID(1), ChainID(k) = sha256(ChainID(k-1) + " " +
// DiffID(k)). Equal chain IDs name equal stacks, whatever image they belong to.
func ChainIDs(diffIDs []digest.Digest) []digest.Digest {
	out := make([]digest.Digest, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			out[i] = d
			continue
		}
		sum := sha256.Sum256([]byte(string(out[i-1]) + " " + string(d)))
		out[i] = digest.NewDigestFromBytes(digest.SHA256, sum[:])
	}
	return out
}

func snapLockFile(name string) string { return "snapshot-" + name + ".lock" }

// unsupportedSuffix marks a chain whose top layer needs its lowers (ErrNeedsLowers): images
// with that chain are flattened, without applying the layer again to find out.
const unsupportedSuffix = ".flat"

// Snapshots returns the image with these layers (bottom first, with their diffIDs) as a stack
// of overlayfs layers, top first, for pkg/run's Spec.Rootfs (the first) and Spec.Lowers (the
// rest), and holds them until release is called.
//
// Each layer is kept once under ROOT/snapshots/<chain ID>, shared by every image whose stack
// starts with the same layers: a second image on a cached base costs only its own layers.
// Missing snapshots are built concurrently, each layer applied into its own empty directory
// (whiteouts become overlay whiteouts, opaque markers opaque xattrs), then completed in
// order once the layers below exist (the metadata of directories a layer only wrote into comes
// from the layers below). Composed by overlayfs, the stack shows exactly the tree [Flatten]
// builds; a layer for which that cannot hold fails with [ErrNeedsLowers] (remembered for its
// chain), and callers flatten the image instead. Rootless callers get ErrNeedsLowers too:
// overlay layers need root.
//
// Like trees, snapshots are built in ROOT/tmp and renamed into place after one syncfs, with
// flock(2) on ROOT/locks/snapshot-<hex>.lock: exclusive to build, shared while held.
func (c *Cache) Snapshots(ctx context.Context, diffIDs []digest.Digest, layers []Layer, opts ...ApplyOption) (stack []string, release func(), err error) {
	if len(diffIDs) != len(layers) || len(layers) == 0 {
		return nil, nil, fmt.Errorf("snapshots: %d diffIDs for %d layers", len(diffIDs), len(layers))
	}
	o, err := makeApplyOptions(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("snapshots: %w", err)
	}
	if o.rootless {
		return nil, nil, fmt.Errorf("snapshots: %w: overlay layers need root", ErrNeedsLowers)
	}
	names := make([]string, len(diffIDs))
	for i, ch := range ChainIDs(diffIDs) {
		if names[i], err = keyName(ch); err != nil {
			return nil, nil, fmt.Errorf("snapshots: %w", err)
		}
		if _, err := os.Lstat(filepath.Join(c.snaps, names[i]+unsupportedSuffix)); err == nil {
			return nil, nil, fmt.Errorf("snapshots: layer %d of %d: %w (remembered)", i+1, len(layers), ErrNeedsLowers)
		}
	}
	for {
		stack, release, err := c.snapshots(ctx, names, layers, o)
		if errors.Is(err, errSnapshotGone) {
			continue // removed by gc between our build and our shared lock: build it again
		}
		return stack, release, err
	}
}

var errSnapshotGone = errors.New("snapshot removed meanwhile")

func (c *Cache) snapPath(name string) string { return filepath.Join(c.snaps, name) }

func (c *Cache) hasSnap(name string) bool {
	fi, err := os.Lstat(c.snapPath(name))
	return err == nil && fi.IsDir()
}

// snapshotBuild is one call's work: the layers it builds and their temporary directories.
type snapshotBuild struct {
	c      *Cache
	names  []string
	layers []Layer
	o      *applyOptions
	tmp    []string        // per layer: its temporary directory if built here, else ""
	done   []chan struct{} // per layer built here: closed when it is complete (finishUpper ran)
}

func (c *Cache) snapshots(ctx context.Context, names []string, layers []Layer, o *applyOptions) ([]string, func(), error) {
	locks := make([]*flock.Lock, len(names))
	unlockAll := func() {
		for _, l := range locks {
			l.Unlock()
		}
	}
	b := &snapshotBuild{c: c, names: names, layers: layers, o: o,
		tmp: make([]string, len(names)), done: make([]chan struct{}, len(names))}
	// Bottom first, as every caller does, so that two processes cannot wait for each other.
	var build []int
	for i, n := range names {
		how := unix.LOCK_SH
		if !c.hasSnap(n) {
			how = unix.LOCK_EX
		}
		l, err := c.lockFile(ctx, snapLockFile(n), how)
		if err != nil {
			unlockAll()
			return nil, nil, fmt.Errorf("snapshots: %w", err)
		}
		locks[i] = l
		if c.hasSnap(n) {
			if how == unix.LOCK_EX {
				if err := l.Downgrade(); err != nil {
					unlockAll()
					return nil, nil, fmt.Errorf("snapshots: %w", err)
				}
				if !c.hasSnap(n) {
					unlockAll()
					return nil, nil, errSnapshotGone
				}
			}
			continue
		}
		if how == unix.LOCK_SH { // removed between the check and the lock
			unlockAll()
			return nil, nil, errSnapshotGone
		}
		build = append(build, i)
		b.done[i] = make(chan struct{})
	}
	if len(build) > 0 {
		if err := b.run(ctx, build); err != nil {
			unlockAll()
			return nil, nil, err
		}
		for _, i := range build {
			if err := locks[i].Downgrade(); err != nil {
				unlockAll()
				return nil, nil, fmt.Errorf("snapshots: %w", err)
			}
		}
		for _, i := range build {
			if !c.hasSnap(names[i]) {
				unlockAll()
				return nil, nil, errSnapshotGone
			}
		}
	}
	stack := make([]string, len(names))
	for i, n := range names {
		stack[len(names)-1-i] = c.snapPath(n)
	}
	return stack, unlockAll, nil
}

// run builds the layers build (indexes, ascending) concurrently, then syncs once and renames
// them into place. On failure nothing is left under snapshots/ but a marker for a layer that
// needs its lowers.
func (b *snapshotBuild) run(ctx context.Context, build []int) (err error) {
	c := b.c
	// Keep pkg/layers' GC, which empties tmp/, away while snapshots are built there.
	gc, err := c.lockFile(ctx, gcLockName, unix.LOCK_SH)
	if err != nil {
		return fmt.Errorf("snapshots: %w", err)
	}
	defer gc.Unlock()
	defer func() {
		if err != nil {
			for _, t := range b.tmp {
				if t != "" {
					err = errors.Join(err, removeTree(t))
				}
			}
		}
	}()
	for _, i := range build {
		if err := c.removeLeftovers(snapLockFile(b.names[i])); err != nil {
			return fmt.Errorf("snapshots: %w", err)
		}
		if b.tmp[i], err = c.tempDir("snap-" + b.names[i]); err != nil {
			return fmt.Errorf("snapshots: %w", err)
		}
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Layers are applied concurrently, a few at a time: each also keeps a decoding goroutine
	// busy, so one more than the CPUs keeps both kinds of work fed.
	sem := make(chan struct{}, runtime.GOMAXPROCS(0)+1)
	errs := make([]error, len(b.names)) // per layer; the first one cancels the others
	var wg sync.WaitGroup
	for _, i := range build {
		wg.Go(func() {
			defer close(b.done[i])
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = context.Cause(ctx)
				return
			}
			err := b.layer(ctx, i, sem)
			if err != nil {
				errs[i] = fmt.Errorf("layer %d of %d: %w", i+1, len(b.names), namingDisk(err, b.tmp[i]))
				cancel(errs[i])
			}
		})
	}
	stopFlush := flushWhile(c.snaps)
	wg.Wait()
	stopFlush()
	for i, e := range errs {
		if errors.Is(e, ErrNeedsLowers) {
			// Remember it: later calls flatten this image without applying the layer again.
			_ = os.WriteFile(filepath.Join(c.snaps, b.names[i]+unsupportedSuffix), nil, 0o600)
		}
	}
	// The first failure is the one to report: the others may only have been cancelled by it.
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("snapshots: %w", err)
	}
	if err := syncFS(c.snaps); err != nil {
		return fmt.Errorf("snapshots: %w", err)
	}
	for _, i := range build {
		if err := os.Rename(b.tmp[i], c.snapPath(b.names[i])); err != nil {
			return fmt.Errorf("snapshots: %w", err)
		}
		b.tmp[i] = ""
	}
	if err := syncDir(c.snaps); err != nil {
		return fmt.Errorf("snapshots: %w", err)
	}
	return nil
}

// layer applies layer i into its temporary directory, releases its slot in sem, waits for the
// layers below it and completes it.
func (b *snapshotBuild) layer(ctx context.Context, i int, sem chan struct{}) error {
	dir := b.tmp[i]
	start := time.Now()

	st, created, err := func() (*upperState, map[string]bool, error) {
		defer func() { <-sem }()
		if err := os.Chmod(dir, rootMode); err != nil {
			return nil, nil, err
		}
		rc, err := b.layers[i].Uncompressed(ctx)
		if err != nil {
			return nil, nil, err
		}
		defer rc.Close()
		st, created, err := applyUpper(ctx, dir, rc, b.o)
		if err != nil {
			return nil, nil, err
		}
		// Read to the end: the layer's digest is checked there, even if its tar ended early.
		if _, err := io.Copy(io.Discard, rc); err != nil {
			return nil, nil, err
		}
		return st, created, nil
	}()
	if err != nil {
		return err
	}
	b.o.logger.Debug("snapshot layer applied", "layer", i+1, "took", time.Since(start).Round(time.Millisecond))
	lowers := make([]string, 0, i)
	for j := i - 1; j >= 0; j-- {
		if b.done[j] != nil {
			select {
			case <-b.done[j]:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			if err := ctx.Err(); err != nil {
				return context.Cause(ctx) // a lower layer failed
			}
			lowers = append(lowers, b.tmp[j])
			continue
		}
		lowers = append(lowers, b.c.snapPath(b.names[j]))
	}
	return finishUpper(dir, st, created, lowers, b.o)
}

// PruneSnapshots removes every snapshot whose chain ID keep rejects, except those in use
// (held by [Cache.Snapshots] or being built), and the markers of chains that need
// flattening likewise. It returns how many snapshots it removed.
func (c *Cache) PruneSnapshots(ctx context.Context, keep func(chainID digest.Digest) bool) (removed int, err error) {
	ents, err := os.ReadDir(c.snaps)
	if err != nil {
		return 0, fmt.Errorf("prune snapshots: %w", err)
	}
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		name, marker := strings.CutSuffix(e.Name(), unsupportedSuffix)
		ch, ok := nameKey(name)
		if !ok || keep(ch) {
			continue
		}
		l, err := c.tryLockFile(snapLockFile(name), unix.LOCK_EX)
		if errors.Is(err, ErrInUse) {
			continue
		}
		if err != nil {
			return removed, fmt.Errorf("prune snapshots: %w", err)
		}
		err = c.removeSnapshot(ctx, e.Name(), marker)
		l.Unlock()
		if err != nil {
			return removed, fmt.Errorf("prune snapshots: %w", err)
		}
		if !marker {
			removed++
		}
	}
	return removed, nil
}

// removeSnapshot moves a snapshot out of snapshots/ (so a crash leaves only tmp/ garbage) and
// deletes it; the caller holds its lock.
func (c *Cache) removeSnapshot(ctx context.Context, entry string, marker bool) error {
	if marker {
		return os.Remove(filepath.Join(c.snaps, entry))
	}
	gc, err := c.lockFile(ctx, gcLockName, unix.LOCK_SH)
	if err != nil {
		return err
	}
	defer gc.Unlock()
	trash := filepath.Join(c.tmp, "rmsnap-"+entry+"-"+randomSuffix())
	if err := os.Rename(filepath.Join(c.snaps, entry), trash); err != nil {
		return err
	}
	if err := syncDir(c.snaps); err != nil {
		return err
	}
	return removeTree(trash)
}

// flushInterval is how often flushWhile writes back what the builds wrote so far.
const flushInterval = 250 * time.Millisecond

// flushWhile starts writing back dirty data of dir's filesystem every flushInterval, until
// stop is called. Layers applied in parallel write hundreds of MB in a few seconds, less than
// the kernel's background writeback threshold (10% of memory), so without this all of it
// would be written at the final syncfs, after the builds; this overlaps the writeback with
// them and leaves the final syncfs little to do. It changes no guarantee: the final syncfs
// still runs before anything is published.
func flushWhile(dir string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(flushInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = syncFS(dir) // best effort: the final syncfs reports errors
			}
		}
	})
	return func() { close(done); wg.Wait() }
}
