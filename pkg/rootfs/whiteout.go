package rootfs

import (
	"archive/tar"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// whiteout handles an entry whose base name starts with .wh.: DIR/.wh.NAME deletes NAME from
// the layers below, DIR/.wh..wh..opq makes DIR opaque (at the end of the layer, so the marker
// may come before or after this layer's own entries in DIR), other .wh..wh.* names are
// skipped. The marker itself is never created.
func (a *applier) whiteout(hdr *tar.Header, dir, base string) error {
	if base == OpaqueWhiteout {
		a.opaque = append(a.opaque, dir)
		return nil
	}
	target := base[len(WhiteoutPrefix):]
	if len(base) > len(WhiteoutMetaPrefix) && base[:len(WhiteoutMetaPrefix)] == WhiteoutMetaPrefix {
		a.o.logger.Debug("skipping whiteout meta entry", "name", hdr.Name)
		return nil
	}
	if target == "" || target == "." || target == ".." {
		return entryErr(hdr, "whiteout", fmt.Errorf("%w: invalid whiteout name %q", ErrUnsafePath, base))
	}
	pfd, err := a.parent(dir, false)
	if err != nil {
		if gone(err) || errors.Is(err, unix.ELOOP) {
			return nil // the directory is not there (or a dead or looping symlink): nothing to delete
		}
		return entryErr(hdr, "whiteout", err)
	}
	var st unix.Stat_t
	err = a.writable(pfd, func() error { return unix.Fstatat(pfd, target, &st, unix.AT_SYMLINK_NOFOLLOW) })
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return entryErr(hdr, "whiteout", err)
	}
	if err := a.removeAt(pfd, target, st.Mode); err != nil {
		return entryErr(hdr, "whiteout", err)
	}
	return nil
}

// applyOpaque removes from dir everything this layer did not create. Directories this layer
// created or wrote into are kept but cleaned the same way, since an opaque directory shows
// nothing of the layers below at any depth.
func (a *applier) applyOpaque(dir string) error {
	p := dir
	if p == "" {
		p = "."
	}
	fd, err := resolveInRoot(a.rootFd, p, 0)
	if err != nil {
		if gone(err) || err == unix.ELOOP {
			return nil
		}
		return err
	}
	defer unix.Close(fd)
	// Name the directory by where it really is: the marker may sit in a symlinked directory,
	// and this layer's entries are recorded by their real names.
	if real, ok := a.inRootPath(fd); ok {
		dir = real
	}
	return a.clearLower(fd, dir)
}

// inRootPath returns the clean name ("." for the root) of the directory fd refers to, from
// /proc/self/fd; ok is false if it cannot be told.
func (a *applier) inRootPath(fd int) (string, bool) {
	rootPath, err1 := os.Readlink(procFd(a.rootFd))
	p, err2 := os.Readlink(procFd(fd))
	if err1 != nil || err2 != nil {
		return "", false
	}
	if p == rootPath {
		return ".", true
	}
	if rel, ok := strings.CutPrefix(p, strings.TrimSuffix(rootPath, "/")+"/"); ok {
		return rel, true
	}
	return "", false
}

func (a *applier) clearLower(fd int, dir string) error {
	names, err := readDirNames(fd)
	if errors.Is(err, unix.EACCES) && a.o.rootless && a.makeWritable(fd) {
		names, err = readDirNames(fd)
	}
	if err != nil {
		return err
	}
	for _, n := range names {
		p := n
		if dir != "" && dir != "." {
			p = path.Join(dir, n)
		}
		var st unix.Stat_t
		if err := unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if err == unix.ENOENT {
				continue
			}
			return err
		}
		if _, ok := a.created[p]; !ok {
			if err := a.removeAt(fd, n, st.Mode); err != nil {
				return fmt.Errorf("remove %q: %w", p, err)
			}
			continue
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			cfd, err := unix.Openat(fd, n, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			err = a.clearLower(cfd, p)
			unix.Close(cfd)
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// removeAllAt removes base in dirfd and, if it is a directory, everything below it, never
// following a symlink: every step is relative to an fd opened with O_NOFOLLOW.
func (a *applier) removeAllAt(dirfd int, base string) error {
	err := a.writable(dirfd, func() error { return unix.Unlinkat(dirfd, base, 0) })
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR && err != unix.EPERM {
		return err
	}
	if a.o.rootless {
		// Deleting it anyway: make sure we may list and empty it.
		_ = chmodAt(dirfd, base, 0o700)
	}
	fd, err := unix.Openat(dirfd, base, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	names, err := readDirNames(fd)
	if err == nil {
		for _, n := range names {
			if err = a.removeAllAt(fd, n); err != nil {
				break
			}
		}
	}
	unix.Close(fd)
	if err != nil {
		return err
	}
	err = a.writable(dirfd, func() error { return unix.Unlinkat(dirfd, base, unix.AT_REMOVEDIR) })
	if err == unix.ENOENT {
		return nil
	}
	return err
}

// readDirNames lists the directory an (O_PATH) fd refers to.
func readDirNames(fd int) ([]string, error) {
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open directory: %w", err)
	}
	f := os.NewFile(uintptr(dfd), "dir")
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("read directory: %w", err)
	}
	return names, nil
}
