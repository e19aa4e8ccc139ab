package rootfs

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// finish runs the end-of-layer work: opaque directories, directory times, final modes.
func (a *applier) finish() error {
	done := make(map[opaqueDir]bool)
	for _, d := range a.opaque {
		if err := a.applyOpaque(d, done); err != nil {
			return fmt.Errorf("opaque directory %q: %w", d.name, err)
		}
	}
	// Times first: they need path resolution, which restrictive final modes could block.
	var fixes []modeFix
	defer func() {
		for _, f := range fixes {
			unix.Close(f.fd)
		}
	}()
	for _, d := range a.dirs {
		fd, err := a.dirTimes(d)
		if err != nil {
			return fmt.Errorf("directory %q: %w", d.name, err)
		}
		if fd >= 0 {
			fixes = append(fixes, modeFix{fd: fd, mode: d.mode})
		}
	}
	// Then modes: directories this layer made writable go back to what they were, then the
	// final modes of this layer's directories, deepest (latest) first.
	for i := len(a.restore) - 1; i >= 0; i-- {
		if err := chmodFd(a.restore[i].fd, a.restore[i].mode); err != nil {
			return err
		}
	}
	for i := len(fixes) - 1; i >= 0; i-- {
		if err := chmodFd(fixes[i].fd, fixes[i].mode); err != nil {
			return err
		}
	}
	return nil
}

// dirTimes sets a directory's times at the end of the layer. If the directory needs a final mode
// (rootless), it returns an O_PATH fd to it, else -1.
func (a *applier) dirTimes(d dirMeta) (int, error) {
	dir, base := splitName(d.name)
	pfd := a.rootFd
	if d.name != "." {
		var err error
		pfd, err = a.parent(dir, false)
		if err != nil {
			if gone(err) {
				return -1, nil // removed or replaced later in this layer
			}
			return -1, err
		}
	}
	// Nothing removed in this layer (the common case of a first layer): the directory is still
	// where its entry made it, no need to check.
	if a.parents.invalidations != 0 {
		var st unix.Stat_t
		if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if gone(err) {
				return -1, nil
			}
			return -1, err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return -1, nil // replaced by a later entry of another type
		}
	}
	ts := []unix.Timespec{d.atime, d.mtime}
	if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return -1, fmt.Errorf("utimensat: %w", err)
	}
	if !d.fixMode {
		return -1, nil
	}
	fd, err := unix.Openat(pfd, base, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open: %w", err)
	}
	return fd, nil
}

// gone reports errors meaning a path no longer exists as a directory.
func gone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)
}
