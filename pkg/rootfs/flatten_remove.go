package rootfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// removeTree removes a tree built from layers. Images contain directories without write
// permission (0555), which os.RemoveAll cannot empty when not root; on failure every directory
// is made u+rwx, through a no-follow fd so that a symlink in the tree is never chmod-ed
// through, and the removal retried.
func removeTree(dir string) error {
	err := os.RemoveAll(dir)
	if err == nil {
		return nil
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, werr error) error {
		if werr != nil || !d.IsDir() {
			return nil
		}
		fd, oerr := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if oerr != nil {
			return nil
		}
		_ = chmodFd(fd, 0o700)
		unix.Close(fd)
		return nil
	})
	if err2 := os.RemoveAll(dir); err2 != nil {
		return errors.Join(err, err2)
	}
	return nil
}
