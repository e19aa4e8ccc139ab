package rootfs

import (
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// cleanName turns an entry name into a clean path relative to the root ("." for the root).
// Absolute names are relative to the root; names that are empty, contain NUL, end in "." or
// "..", or climb out of the root are rejected rather than rewritten.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty name", ErrUnsafePath)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: NUL in name", ErrUnsafePath)
	}
	n := strings.TrimRight(name, "/")
	if n == "" {
		return ".", nil // "/"
	}
	base := n[strings.LastIndexByte(n, '/')+1:]
	if base == ".." || (base == "." && n != ".") {
		return "", fmt.Errorf("%w: name ends in %q", ErrUnsafePath, base)
	}
	c := path.Clean(strings.TrimLeft(n, "/"))
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("%w: name escapes the root", ErrUnsafePath)
	}
	return c, nil
}

// cleanLinkName cleans a hard link target: like a name, relative to the root, never the root.
func cleanLinkName(name string) (string, error) {
	c, err := cleanName(name)
	if err != nil {
		return "", err
	}
	if c == "." {
		return "", fmt.Errorf("%w: link target is the root", ErrUnsafePath)
	}
	return c, nil
}

// splitName splits a clean name into its parent ("" for the root) and base.
func splitName(name string) (dir, base string) {
	i := strings.LastIndexByte(name, '/')
	if i < 0 {
		return "", name
	}
	return name[:i], name[i+1:]
}

func hasWhiteoutComponent(dir string) bool {
	for c := range strings.SplitSeq(dir, "/") {
		if strings.HasPrefix(c, WhiteoutPrefix) {
			return true
		}
	}
	return false
}

// resolveInRoot opens dir (a clean name) as an O_PATH directory fd, resolving every component
// inside the root: ".." and absolute symlinks stop at the root, as under chroot. The kernel
// enforces this (openat2 RESOLVE_IN_ROOT), so no lookup can leave the root, whatever symlinks
// earlier entries or layers made.
func resolveInRoot(rootFd int, dir string, flags uint64) (int, error) {
	return resolveInRootHow(rootFd, dir, flags, 0)
}

// resolveInRootHow is resolveInRoot with more RESOLVE_* flags.
func resolveInRootHow(rootFd int, dir string, flags, resolve uint64) (int, error) {
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC | flags,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | resolve,
	}
	for range 16 {
		fd, err := unix.Openat2(rootFd, dir, &how)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue // a concurrent rename somewhere on the system; the kernel asks to retry
		}
		if err != nil {
			return -1, err
		}
		return fd, nil
	}
	return -1, unix.EAGAIN
}

// parentCache keeps a few resolved parent directory fds keyed by clean name, so that the many
// entries of one directory resolve it once. Removing a directory or symlink anywhere may change
// what a name resolves to, so the applier invalidates the whole cache on any such removal.
type parentCache struct {
	rootFd  int
	entries [32]cachedDir
	// clock stamps lookups: the least recently used entry is replaced, so that a directory
	// with many subdirectories (usr/share/doc) stays cached while they are filled in.
	clock uint64
	// stale fds are closed at the next lookup, not at invalidation: the entry being applied may
	// still be using one of them.
	stale []int
	// made describes, by name, the directories directory entries created (fd unused), whose
	// real names and setgid bits are known without asking the kernel. Like the entries it is
	// dropped on invalidation, as what a name resolves to can only change through a removal.
	made map[string]cachedDir
	// invalidations counts invalidate calls: while it is 0 no directory or symlink was removed
	// and no directory's metadata changed, so every directory this layer made is still there.
	invalidations int
}

type cachedDir struct {
	name string
	real string // where the directory really is, as a clean name ("" for the root)
	fd   int    // 0 = empty slot (fd 0 is never a directory we opened)
	sgid bool   // the directory is setgid: new entries take its group
	// realOK: real was told by the kernel (/proc), not guessed from the name.
	realOK bool
	used   uint64 // clock at the last lookup or add
}

func (c *parentCache) lookup(name string) (*cachedDir, bool) {
	if len(c.stale) > 0 {
		for _, fd := range c.stale {
			unix.Close(fd)
		}
		c.stale = c.stale[:0]
	}
	for i := range c.entries {
		if e := &c.entries[i]; e.fd > 0 && e.name == name {
			c.clock++
			e.used = c.clock
			return e, true
		}
	}
	return nil, false
}

func (c *parentCache) add(d cachedDir) {
	e := &c.entries[0]
	for i := range c.entries {
		if f := &c.entries[i]; f.fd <= 0 || f.used < e.used {
			e = f
			if f.fd <= 0 {
				break
			}
		}
	}
	c.clock++
	d.used = c.clock
	if e.fd > 0 {
		c.stale = append(c.stale, e.fd)
	}
	*e = d
}

func (c *parentCache) invalidate() {
	clear(c.made)
	c.invalidations++
	for i := range c.entries {
		if e := &c.entries[i]; e.fd > 0 {
			c.stale = append(c.stale, e.fd)
			*e = cachedDir{}
		}
	}
}

func (c *parentCache) closeAll() {
	c.invalidate()
	for _, fd := range c.stale {
		unix.Close(fd)
	}
	c.stale = nil
}

// parent returns a directory fd for dir ("" is the root), owned by the cache: valid until the
// next call of parent. With create, missing directories are created inside the root (0755).
// It also sets a.parentSgid, whether new entries in dir inherit its group, and a.parentReal,
// the name dir really resolves to (through symlinks), which keys what this layer created.
func (a *applier) parent(dir string, create bool) (int, error) {
	if dir == "" {
		a.parentSgid, a.parentReal, a.parentRealOK = a.rootSgid, "", true
		return a.rootFd, nil
	}
	if d, ok := a.parents.lookup(dir); ok {
		a.parentSgid, a.parentReal, a.parentRealOK = d.sgid, d.real, d.realOK
		return d.fd, nil
	}
	fd, err := a.openDir(dir, create)
	if err != nil {
		return -1, err
	}
	d := cachedDir{name: dir, real: dir, fd: fd, sgid: true}
	if m, ok := a.parents.made[dir]; ok {
		// Just created by a directory entry: no fstat or /proc readlink needed.
		d.real, d.sgid, d.realOK = m.real, m.sgid, m.realOK
	} else {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil {
			d.sgid = st.Mode&unix.S_ISGID != 0
		}
		if real, ok := a.inRootPath(fd); ok {
			d.real, d.realOK = real, true
			if real == "." {
				d.real = ""
			}
		}
	}
	a.parents.add(d)
	a.parentSgid, a.parentReal, a.parentRealOK = d.sgid, d.real, d.realOK
	return fd, nil
}

// inRootPath returns the clean name ("." for the root) of the directory fd refers to, from
// /proc/self/fd; ok is false if it cannot be told (no /proc, or the directory was removed).
func (a *applier) inRootPath(fd int) (string, bool) {
	if a.rootPath == "" {
		p, err := os.Readlink(procFd(a.rootFd))
		if err != nil || !strings.HasPrefix(p, "/") {
			return "", false
		}
		a.rootPath = p
	}
	p, err := os.Readlink(procFd(fd))
	if err != nil {
		return "", false
	}
	if p == a.rootPath {
		return ".", true
	}
	if rel, ok := strings.CutPrefix(p, strings.TrimSuffix(a.rootPath, "/")+"/"); ok && rel != "" &&
		!strings.HasSuffix(rel, " (deleted)") && path.Clean(rel) == rel {
		return rel, true
	}
	return "", false
}

// joinName joins a clean directory name ("" or "." for the root) and a base name.
func joinName(dir, base string) string {
	if dir == "" || dir == "." {
		return base
	}
	return dir + "/" + base
}

// openDir resolves dir in the root, creating missing components when create is set; the caller
// owns the returned fd.
func (a *applier) openDir(dir string, create bool) (int, error) {
	fd, err := a.resolve(dir)
	if err == unix.EACCES && a.o.rootless {
		if err := a.makeTraversable(dir); err != nil {
			return -1, err
		}
		fd, err = a.resolve(dir)
	}
	if err == nil {
		return fd, nil
	}
	// In upper mode this layer's own whiteout may be in the way (ENOTDIR): it is replaced.
	if (err != unix.ENOENT && (a.upper == nil || a.upper.inMarker || err != unix.ENOTDIR)) || !create {
		return -1, fmt.Errorf("open %q in root: %w", dir, err)
	}
	// Create the missing directory under its (recursively ensured) parent.
	pdir, base := splitName(dir)
	pfd := a.rootFd
	if pdir != "" {
		pfd, err = a.openDir(pdir, true)
		if err != nil {
			return -1, err
		}
		defer unix.Close(pfd)
	}
	err = a.writable(pfd, func() error { return unix.Mkdirat(pfd, base, 0o755) })
	if err != nil && err != unix.EEXIST {
		return -1, fmt.Errorf("mkdir %q in root: %w", dir, err)
	}
	if err == unix.EEXIST && a.upper != nil && !a.upper.inMarker {
		if _, err := a.replaceWhiteout(pfd, base, dir); err != nil {
			return -1, err
		}
	}
	if err == nil && a.upper != nil {
		a.upper.implicit[dir] = true
	}
	if err == nil {
		// Parents the layer did not list are 0755 and root's, like docker's, whatever our umask
		// or a setgid directory above would give them.
		var st unix.Stat_t
		sgid := unix.Fstat(pfd, &st) != nil || st.Mode&unix.S_ISGID != 0
		if sgid && !a.o.rootless {
			if err := unix.Fchownat(pfd, base, 0, 0, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return -1, fmt.Errorf("chown %q: %w", dir, err)
			}
		}
		if sgid || a.umask&0o755 != 0 {
			if err := chmodAt(pfd, base, 0o755); err != nil {
				return -1, fmt.Errorf("chmod %q: %w", dir, err)
			}
		}
	}
	fd, err = a.resolve(dir)
	if err != nil {
		// EEXIST above and still no directory: a dangling symlink or a non-directory is in the way.
		return -1, fmt.Errorf("open %q in root: %w", dir, err)
	}
	return fd, nil
}

// resolve is resolveInRoot from the root. In upper mode no symlink is followed: where a
// layer writes through one depends on the layers below, which upper mode does not see.
func (a *applier) resolve(dir string) (int, error) {
	if a.upper == nil {
		return resolveInRoot(a.rootFd, dir, 0)
	}
	fd, err := resolveInRootHow(a.rootFd, dir, 0, unix.RESOLVE_NO_SYMLINKS)
	if err == unix.ELOOP {
		return -1, needsLowers("%q is reached through a symlink", "/"+dir)
	}
	return fd, err
}

// procFd is the /proc path of an fd, for the few calls that have no fd form for O_PATH fds.
func procFd(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// chmodFd changes the mode of the inode an (O_PATH) fd refers to.
func chmodFd(fd int, mode uint32) error {
	if err := unix.Fchmodat(unix.AT_FDCWD, procFd(fd), mode, 0); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return nil
}

// chmodAt changes the mode of base in dirfd without following a symlink there.
func chmodAt(dirfd int, base string, mode uint32) error {
	err := unix.Fchmodat(dirfd, base, mode, unix.AT_SYMLINK_NOFOLLOW)
	if err == unix.EOPNOTSUPP || err == unix.ENOSYS {
		// No fchmodat2 (Linux < 6.6), or base is a symlink (whose mode cannot change anyway).
		var st unix.Stat_t
		if err := unix.Fstatat(dirfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return nil
		}
		return unix.Fchmodat(dirfd, base, mode, 0)
	}
	return err
}
