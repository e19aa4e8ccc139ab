package rootfs

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"golang.org/x/sys/unix"
)

// errKeepDir tells a directory entry that a directory is already there: keep it and its contents.
var errKeepDir = errors.New("directory exists")

// create runs mk, which creates base in pfd exclusively. If something is already there it is
// removed first (a directory with everything in it, a symlink itself, never what it points to)
// and mk runs again; with keepDir an existing directory is kept and errKeepDir returned.
func (a *applier) create(pfd int, base string, keepDir bool, mk func() error) error {
	err := a.writable(pfd, mk)
	if err != unix.EEXIST {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("stat existing: %w", err)
	}
	if keepDir && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return errKeepDir
	}
	if err := a.removeAt(pfd, base, st.Mode); err != nil {
		return fmt.Errorf("replace existing: %w", err)
	}
	if err := a.writable(pfd, mk); err != nil {
		return err
	}
	if keepDir && a.upper != nil && isWhiteoutDev(&st) {
		// A directory over this layer's own whiteout: the lower one is gone, contents and all.
		real := joinName(a.parentReal, base)
		a.upper.hidden[real] = true
		return a.markOpaque(pfd, base, real)
	}
	return nil
}

// removeAt removes base in pfd whose lstat mode is mode: a directory with all its contents, or
// any other entry (a symlink is removed itself). Removing a directory or a symlink can change
// what later names resolve to, so cached parents are dropped.
func (a *applier) removeAt(pfd int, base string, mode uint32) error {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		a.parents.invalidate()
		return a.removeAllAt(pfd, base)
	case unix.S_IFLNK:
		a.parents.invalidate()
	}
	return a.writable(pfd, func() error { return unix.Unlinkat(pfd, base, 0) })
}

// file creates a regular file and copies its body from r.
func (a *applier) file(hdr *tar.Header, r io.Reader, pfd int, base string) error {
	fd := -1
	perm := uint32(hdr.Mode) & 0o777
	err := a.create(pfd, base, false, func() error {
		var err error
		fd, err = unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm)
		return err
	})
	if err != nil {
		return entryErr(hdr, "create", err)
	}
	defer unix.Close(fd)
	if hdr.Size > 0 {
		if err := copyToFd(fd, r, hdr.Size); err != nil {
			return entryErr(hdr, "write", err)
		}
	}
	return a.meta(hdr, pfd, base, fd)
}

// copyToFd writes exactly size bytes from r to fd with a pooled buffer (no per-file allocation,
// no os.File: regular files need no poller).
func copyToFd(fd int, r io.Reader, size int64) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var done int64
	for done < size {
		n, err := r.Read(buf[:min(int64(len(buf)), size-done)])
		for w := buf[:n]; len(w) > 0; {
			m, werr := unix.Write(fd, w)
			if werr == unix.EINTR {
				continue
			}
			if werr != nil {
				return werr
			}
			w = w[m:]
		}
		done += int64(n)
		if err == io.EOF {
			if done < size {
				return io.ErrUnexpectedEOF
			}
			break
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// dir creates a directory, or keeps an existing one and updates its metadata. Its times are set
// at the end of the layer, after its contents.
func (a *applier) dir(hdr *tar.Header, name string, pfd int, base string) error {
	mode := uint32(hdr.Mode) & 0o7777
	applied := mode
	if a.o.rootless {
		applied |= 0o700 // the layer (and later ones) must be able to fill it
	}
	if a.upper != nil {
		if base == "." {
			delete(a.upper.implicit, "")
		} else {
			delete(a.upper.implicit, joinName(a.parentReal, base))
		}
	}
	fresh := false
	if base != "." {
		err := a.create(pfd, base, true, func() error { return unix.Mkdirat(pfd, base, applied&0o777) })
		if err != nil && err != errKeepDir {
			return entryErr(hdr, "mkdir", err)
		}
		fresh = err == nil
	}
	// An existing directory keeps its old owner and mode until we set them; a new one already
	// has the right ones in the common case (see meta).
	if !fresh || !a.ownedAsCreated(hdr) {
		if err := a.owner(hdr, pfd, base, -1); err != nil {
			return err
		}
	}
	if !fresh || applied&0o7000 != 0 || applied&a.umask != 0 || a.parentSgid { // mkdir inherits S_ISGID
		if err := chmodAt(pfd, base, applied); err != nil {
			return entryErr(hdr, "chmod", err)
		}
	}
	if !fresh {
		// Cached parents remember whether they are setgid; this one may just have changed.
		a.parents.invalidate()
		if base == "." {
			a.rootSgid = applied&unix.S_ISGID != 0
		}
	} else {
		// Its real name is its parent's and base, and it is setgid only if we asked for it (or
		// possibly inherited it: assumed so, which only costs chowns). Entries below it are
		// coming: parent then skips fstat and readlink.
		real := joinName(a.parentReal, base)
		a.parents.made[name] = cachedDir{
			name:   name,
			real:   real,
			sgid:   applied&unix.S_ISGID != 0 || a.parentSgid,
			realOK: a.parentRealOK,
		}
		if a.parentRealOK {
			a.fresh[real] = true
		}
	}
	if a.wantsXattrs(hdr) {
		fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return entryErr(hdr, "open", err)
		}
		err = a.xattrs(hdr, fd)
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	a.dirs = append(a.dirs, dirMeta{
		name:    name,
		atime:   atime(hdr),
		mtime:   timespec(hdr.ModTime),
		mode:    mode,
		fixMode: applied != mode,
	})
	return nil
}

// symlink creates a symlink with its target verbatim; the target is never followed here.
func (a *applier) symlink(hdr *tar.Header, pfd int, base string) error {
	err := a.create(pfd, base, false, func() error { return unix.Symlinkat(hdr.Linkname, pfd, base) })
	if err != nil {
		return entryErr(hdr, "symlink", err)
	}
	if !a.ownedAsCreated(hdr) {
		if err := a.owner(hdr, pfd, base, -1); err != nil {
			return err
		}
	}
	return a.times(hdr, pfd, base)
}

// hardlink links base to the entry's target, resolved in the root. The target may come from a
// lower layer or an earlier entry; a symlink target is linked itself (CVE-2021-32760), and the
// link entry's own metadata is not applied to the shared inode.
func (a *applier) hardlink(hdr *tar.Header, name string, pfd int, base string) error {
	target, err := cleanLinkName(hdr.Linkname)
	if err != nil {
		return entryErr(hdr, "link", err)
	}
	tdir, tbase := splitName(target)
	tpfd := a.rootFd
	if tdir != "" {
		tpfd, err = a.openDir(tdir, false)
		if err != nil {
			if a.upper != nil && errors.Is(err, unix.ENOENT) {
				err = needsLowers("hard link to %q of a lower layer", hdr.Linkname)
			}
			return entryErr(hdr, "link", fmt.Errorf("target %q: %w", hdr.Linkname, err))
		}
		defer unix.Close(tpfd)
	}
	var tst unix.Stat_t
	if err := unix.Fstatat(tpfd, tbase, &tst, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if a.upper != nil && err == unix.ENOENT {
			err = needsLowers("hard link to %q of a lower layer", hdr.Linkname)
		}
		return entryErr(hdr, "link", fmt.Errorf("target %q: %w", hdr.Linkname, err))
	}
	if a.upper != nil && isWhiteoutDev(&tst) {
		return entryErr(hdr, "link", needsLowers("hard link to the whited-out %q", hdr.Linkname))
	}
	if tst.Mode&unix.S_IFMT == unix.S_IFDIR {
		return entryErr(hdr, "link", fmt.Errorf("%w: target %q is a directory", ErrUnsupportedEntry, hdr.Linkname))
	}
	var st unix.Stat_t
	if unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Dev == tst.Dev && st.Ino == tst.Ino {
		return nil // already this inode (e.g. a link to itself)
	}
	err = a.create(pfd, base, false, func() error { return unix.Linkat(tpfd, tbase, pfd, base, 0) })
	if err != nil {
		return entryErr(hdr, "link", err)
	}
	return nil
}

// node creates a FIFO or a device node (the caller skips devices when rootless).
func (a *applier) node(hdr *tar.Header, pfd int, base string) error {
	perm := uint32(hdr.Mode) & 0o777
	var typ uint32
	var dev int
	switch hdr.Typeflag {
	case tar.TypeFifo:
		typ = unix.S_IFIFO
	case tar.TypeChar, tar.TypeBlock:
		typ = unix.S_IFCHR
		if hdr.Typeflag == tar.TypeBlock {
			typ = unix.S_IFBLK
		}
		if hdr.Devmajor < 0 || hdr.Devminor < 0 || hdr.Devmajor > math.MaxUint32 || hdr.Devminor > math.MaxUint32 {
			return entryErr(hdr, "mknod", fmt.Errorf("device number %d:%d out of range", hdr.Devmajor, hdr.Devminor))
		}
		dev = int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
		if a.upper != nil && dev == 0 && typ == unix.S_IFCHR {
			return entryErr(hdr, "mknod", needsLowers("character device 0:0 is an overlay whiteout"))
		}
	}
	err := a.create(pfd, base, false, func() error { return unix.Mknodat(pfd, base, typ|perm, dev) })
	if err != nil {
		return entryErr(hdr, "mknod", err)
	}
	return a.meta(hdr, pfd, base, -1)
}

// meta applies owner, xattrs, mode and times to a new regular file (fd >= 0) or node (fd < 0),
// in that order: chown clears setuid bits and security.capability, so they come after it, and
// setting an xattr needs write permission on the file, which a read-only mode would take away
// (rootless, where we have no CAP_DAC_OVERRIDE: the file is then made u+w for the xattrs).
func (a *applier) meta(hdr *tar.Header, pfd int, base string, fd int) error {
	if !a.ownedAsCreated(hdr) {
		if err := a.owner(hdr, pfd, base, fd); err != nil {
			return err
		}
	}
	mode := uint32(hdr.Mode) & 0o7777
	setMode := mode&0o7000 != 0 || mode&a.umask != 0
	if fd >= 0 && a.wantsXattrs(hdr) {
		if a.o.rootless && (mode&0o200 == 0 || a.umask&0o200 != 0) {
			if err := unix.Fchmod(fd, mode&0o777|0o200); err != nil {
				return entryErr(hdr, "chmod", err)
			}
			setMode = true
		}
		if err := a.xattrs(hdr, fd); err != nil {
			return err
		}
	}
	if setMode {
		var err error
		if fd >= 0 {
			err = unix.Fchmod(fd, mode)
		} else {
			err = chmodAt(pfd, base, mode)
		}
		if err != nil {
			return entryErr(hdr, "chmod", err)
		}
	}
	return a.times(hdr, pfd, base)
}

// ownedAsCreated reports whether an entry just created in the last resolved parent already has
// the owner hdr asks for: it belongs to 0:0 when we are 0:0 (root) and the parent is not setgid.
// That is most entries of most images, so skipping the chown saves a syscall per entry.
// Rootless, the owner goes to an xattr and nothing is chowned (owner checks the range).
func (a *applier) ownedAsCreated(hdr *tar.Header) bool {
	return hdr.Uid == 0 && hdr.Gid == 0 && a.ownerIsRoot && !a.parentSgid
}

// owner sets the entry's uid/gid as root (by fd, or without following base). Rootless, the
// owner is recorded by xattrs instead.
func (a *applier) owner(hdr *tar.Header, pfd int, base string, fd int) error {
	if hdr.Uid < 0 || hdr.Gid < 0 || hdr.Uid >= math.MaxUint32 || hdr.Gid >= math.MaxUint32 {
		return entryErr(hdr, "chown", fmt.Errorf("owner %d:%d out of range", hdr.Uid, hdr.Gid))
	}
	if a.o.rootless {
		return nil
	}
	var err error
	if fd >= 0 {
		err = unix.Fchown(fd, hdr.Uid, hdr.Gid)
	} else {
		err = unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		return entryErr(hdr, "chown", err)
	}
	return nil
}

// times sets atime and mtime of base without following it.
func (a *applier) times(hdr *tar.Header, pfd int, base string) error {
	ts := []unix.Timespec{atime(hdr), timespec(hdr.ModTime)}
	if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return entryErr(hdr, "utimes", err)
	}
	return nil
}

func atime(hdr *tar.Header) unix.Timespec {
	if hdr.AccessTime.IsZero() {
		return timespec(hdr.ModTime)
	}
	return timespec(hdr.AccessTime)
}

// timespec converts without going through UnixNano, which overflows outside 1678–2262.
func timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}
