package rootfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

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
// The options are passed to [Apply].
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
	tmp, err := os.MkdirTemp(parent, "."+base+".imgrun-tmp-")
	if err != nil {
		return fmt.Errorf("flatten %s: %w", dir, err)
	}
	if err := buildTree(ctx, tmp, layers, opts); err != nil {
		return errors.Join(fmt.Errorf("flatten %s: %w", dir, err), removeTree(tmp))
	}
	// rename(2) replaces an empty directory (os.Rename refuses any existing directory).
	if err := unix.Rename(tmp, dir); err != nil {
		// dir became non-empty meanwhile (ENOTEMPTY, EEXIST) or cannot be replaced.
		err = &os.LinkError{Op: "rename", Old: tmp, New: dir, Err: err}
		return errors.Join(fmt.Errorf("flatten %s: %w", dir, err), removeTree(tmp))
	}
	if err := syncDir(parent); err != nil {
		return fmt.Errorf("flatten %s: %w", dir, err)
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

// buildTree applies layers in order into the existing directory tmp and syncs its filesystem.
// It does not clean up on failure; the caller removes tmp.
func buildTree(ctx context.Context, tmp string, layers []Layer, opts []ApplyOption) error {
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
