package run

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"
)

// Every mount target inside the rootfs is found with openat2(RESOLVE_IN_ROOT), created with
// pathrs-lite's in-root MkdirAll when missing, and mounted onto through its /proc/self/fd/N
// magic link, so a symlink in the image can never point a mount at the host (D2, D5 in
// THREATS.md). Targets the launcher owns (/proc, /sys, /dev) must not be symlinks at all (D4).

// fdPath is the magic link through which mount(2) reaches the file behind fd.
func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// openInRoot opens p inside root as an O_PATH descriptor, resolving ".." and symlinks as if root
// were "/". With noSymlinks any symlink on the way is an error.
func openInRoot(root *os.File, p string, noSymlinks bool) (int, error) {
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	if noSymlinks {
		how.Resolve |= unix.RESOLVE_NO_SYMLINKS
	}
	for {
		fd, err := unix.Openat2(int(root.Fd()), p, &how)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		if errors.Is(err, unix.ELOOP) && noSymlinks {
			return -1, withKind("unsafe", fmt.Errorf("%w: /%s in the image is a symlink", ErrUnsafeRootfs, p))
		}
		return fd, err
	}
}

// mountTarget returns an O_PATH descriptor of p inside root, creating it in-root when missing:
// a directory when dir is true, else an empty file. The caller closes it.
func mountTarget(root *os.File, p string, dir, noSymlinks bool) (int, error) {
	fd, err := openInRoot(root, p, noSymlinks)
	if err == nil || !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	parent, base := path.Split(path.Clean("/" + p))
	if base == "" {
		return -1, fmt.Errorf("mount target %q: no name", p)
	}
	pf, err := pathrs.MkdirAllHandle(root, parent, 0o755)
	if err != nil {
		return -1, fmt.Errorf("create mount target %s: %w", p, err)
	}
	defer pf.Close()
	if dir {
		err = unix.Mkdirat(int(pf.Fd()), base, 0o755)
	} else {
		var f int
		f, err = unix.Openat(int(pf.Fd()), base, unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err == nil {
			unix.Close(f)
		}
	}
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, fmt.Errorf("create mount target %s: %w", p, err)
	}
	return openInRoot(root, p, noSymlinks)
}

// mountAt mounts onto p inside root (see mountTarget).
func mountAt(root *os.File, p string, dir, noSymlinks bool, source, fstype string, flags uintptr, data string) error {
	fd, err := mountTarget(root, p, dir, noSymlinks)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Mount(source, fdPath(fd), fstype, flags, data); err != nil {
		return &os.PathError{Op: "mount " + fstype + " on", Path: "/" + p, Err: err}
	}
	return nil
}

// setReadOnly makes the mount at p inside root read-only (recursively with rec).
func setReadOnly(root *os.File, p string, rec bool) error {
	fd, err := openInRoot(root, p, false)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	flags := uint(unix.AT_EMPTY_PATH)
	if rec {
		flags |= unix.AT_RECURSIVE
	}
	if err := unix.MountSetattr(fd, "", flags, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
		return &os.PathError{Op: "remount read-only", Path: "/" + p, Err: err}
	}
	return nil
}
