package rootfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// rootMode is the mode of a flattened tree's root unless a layer sets it (as docker's "/").
const rootMode = 0o755

// Flatten applies layers, in order, into dir, which must be absent or an empty directory
// (otherwise the error wraps [ErrNotEmpty]). The tree is built in a temporary directory beside
// dir (same filesystem), flushed with syncfs and renamed into place only when every layer was
// applied and verified, so on any failure, cancellation included, dir is left absent or empty
// and the temporary tree is removed.
//
// Decompression of each layer runs in its own goroutine, a couple of layers ahead of the one
// being applied, through bounded buffers: on two cores one decompresses while the other
// extracts, with memory bounded whatever the layer sizes. Layers are still applied strictly in
// order, as whiteouts require. Every layer is read to its end, so a layer whose reader reports
// a digest mismatch at EOF fails Flatten even when its tar ends early.
//
// An existing empty dir is replaced by the new tree, whose root is 0755 (like docker's "/")
// unless a layer's root entry says otherwise. The options are passed to [Apply].
func Flatten(ctx context.Context, dir string, layers []Layer, opts ...ApplyOption) error {
	if _, err := makeApplyOptions(opts); err != nil {
		return fmt.Errorf("flatten %s: %w", dir, err)
	}
	if err := checkEmptyTarget(dir); err != nil {
		return fmt.Errorf("flatten %s: %w", dir, err)
	}
	parent, base := filepath.Split(filepath.Clean(dir))
	if parent == "" {
		parent = "."
	}
	prefix := "." + base + ".imgrun-tmp-"
	removeStaleTemps(parent, prefix)
	tmp, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		return fmt.Errorf("flatten %s: %w", dir, err)
	}
	// The lock marks the temporary tree as live; a killed Flatten's tree is unlocked and the
	// next Flatten into the same dir removes it.
	unlock, err := lockDir(tmp, false)
	if err != nil {
		return errors.Join(fmt.Errorf("flatten %s: %w", dir, err), removeTree(tmp))
	}
	defer unlock()
	tree, err := buildTree(ctx, tmp, layers, opts)
	if err != nil {
		return errors.Join(fmt.Errorf("flatten %s: %w", dir, err), removeTree(tmp))
	}
	// rename(2) replaces an empty directory (os.Rename refuses any existing directory).
	if err := unix.Rename(tree, dir); err != nil {
		lerr := error(&os.LinkError{Op: "rename", Old: tree, New: dir, Err: err})
		if err == unix.ENOTEMPTY || err == unix.EEXIST || err == unix.ENOTDIR {
			lerr = fmt.Errorf("%w: %w", ErrNotEmpty, lerr) // filled or replaced meanwhile
		}
		return errors.Join(fmt.Errorf("flatten %s: %w", dir, lerr), removeTree(tmp))
	}
	if err := syncDir(parent); err != nil {
		return fmt.Errorf("flatten %s: %w", dir, err)
	}
	if tree != tmp {
		// What is left of the other layers' directories.
		if err := removeTree(tmp); err != nil {
			return fmt.Errorf("flatten %s: %w", dir, err)
		}
	}
	return nil
}

// checkEmptyTarget accepts a missing path or an empty directory (not a symlink to one).
func checkEmptyTarget(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is not a directory", ErrNotEmpty, dir)
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if len(names) > 0 {
		return fmt.Errorf("%w: %s", ErrNotEmpty, dir)
	}
	if err != nil && err != io.EOF {
		return err
	}
	return nil
}

// buildTree builds the tree of layers under the existing empty directory tmp and syncs its
// filesystem; it returns where the tree is (tmp, or a directory inside it). It does not
// clean up on failure; the caller removes tmp.
//
// As root, with more than one layer, the layers are applied concurrently and merged
// ([buildParallel]); an image with a layer that needs the layers below it, and rootless
// callers, apply the layers one after the other into tmp.
func buildTree(ctx context.Context, tmp string, layers []Layer, opts []ApplyOption) (string, error) {
	o, err := makeApplyOptions(opts)
	if err != nil {
		return "", err
	}
	if !o.rootless && !o.inOrder && len(layers) > 1 && parallelFlatten {
		tree, err := buildParallel(ctx, tmp, layers, o)
		if err == nil {
			return tree, syncFS(tmp)
		}
		if !errors.Is(err, ErrNeedsLowers) {
			return "", err
		}
		o.logger.Debug("applying the layers one after the other", "reason", err)
		if err := emptyDir(tmp); err != nil {
			return "", err
		}
	}
	return tmp, buildTreeInOrder(ctx, tmp, layers, opts)
}

// parallelFlatten lets tests compare the two ways of building a tree.
var parallelFlatten = true

// emptyDir removes everything in dir.
func emptyDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// buildTreeInOrder applies layers in order into the existing directory tmp and syncs its
// filesystem.
func buildTreeInOrder(ctx context.Context, tmp string, layers []Layer, opts []ApplyOption) error {
	if err := os.Chmod(tmp, rootMode); err != nil {
		return err
	}
	order := make([]int, len(layers))
	for i := range order {
		order[i] = i
	}
	q := newLayerQueue(ctx, layers, order)
	defer q.Close()
	for {
		s, i, err := q.Next()
		if err == io.EOF {
			break
		}
		if err := applyStream(ctx, tmp, s, opts); err != nil {
			return fmt.Errorf("layer %d of %d: %w", i+1, len(layers), err)
		}
	}
	return syncFS(tmp)
}

// applyStream applies one layer stream and then reads it to its end, so that its digest is
// checked even when the tar ends before the stream does. When Apply fails the rest of the
// layer is not decompressed; the layer's own errors (truncation, a digest mismatch) reach
// Apply through the stream's Read and are wrapped in its error.
func applyStream(ctx context.Context, root string, s *layerStream, opts []ApplyOption) error {
	defer s.release()
	if err := Apply(ctx, root, s, opts...); err != nil {
		return err
	}
	return s.finish()
}

// syncFS flushes the filesystem holding dir (syncfs(2)): one call instead of an fsync per file.
func syncFS(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return &os.PathError{Op: "syncfs", Path: dir, Err: err}
	}
	return nil
}

// syncDir fsyncs a directory so that a rename in it is durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// lockDir takes an exclusive flock on a directory (waiting only if wait is set); the lock dies
// with the process.
func lockDir(dir string, wait bool) (unlock func(), err error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	how := unix.LOCK_EX
	if !wait {
		how |= unix.LOCK_NB
	}
	if err := unix.Flock(fd, how); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "flock", Path: dir, Err: err}
	}
	return func() { unix.Close(fd) }, nil
}

// removeStaleTemps removes the temporary trees that killed Flattens into the same target left
// beside it: those whose lock nobody holds. Failures are ignored; they only leave garbage.
func removeStaleTemps(parent, prefix string) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		p := filepath.Join(parent, e.Name())
		unlock, err := lockDir(p, false)
		if err != nil {
			continue // live, or not ours to judge
		}
		_ = removeTree(p)
		unlock()
	}
}
