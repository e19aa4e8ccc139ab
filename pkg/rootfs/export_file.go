package rootfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ExportFile writes [Export]'s tar to the file path, atomically: it writes a temporary file
// beside path (locked while it is written), fsyncs it and renames it into place only when the
// export is complete, so a failed or interrupted export leaves no partial path. Temporary
// files that killed exports to the same path left behind (their lock is free) are removed
// first. The file is created 0644.
func ExportFile(ctx context.Context, path string, layers []Layer, opts ...ApplyOption) (err error) {
	dir, base := filepath.Split(filepath.Clean(path))
	if dir == "" {
		dir = "."
	}
	prefix := "." + base + ".imgrun-tmp-"
	removeStaleTempFiles(dir, prefix)
	tmp, err := os.CreateTemp(dir, prefix+"*")
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the temporary name would only confuse
		}
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// The lock marks the file as being written; a killed export's file is unlocked.
	if err := unix.Flock(int(tmp.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("lock %s: %w", tmp.Name(), err)
	}
	// Layers decoded ahead of the writer spill beside the output: the disk it is written to.
	if err := export(ctx, tmp, layers, newSpiller(dir, prefix), exportDecoders(), opts); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	tmp.Close() // releases the lock, after the rename: no window where the file is unlocked
	return syncDir(dir)
}

// removeStaleTempFiles removes the temporary files in dir named prefix* whose lock nobody
// holds. Failures are ignored; they only leave garbage.
func removeStaleTempFiles(dir, prefix string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) == nil {
			_ = os.Remove(p)
		}
		unix.Close(fd)
	}
}
