package rootfs

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// whiteout handles an entry whose base name starts with .wh.: DIR/.wh.NAME deletes NAME from
// the layers below, DIR/.wh..wh..opq makes DIR opaque (at the end of the layer, so the marker
// may come before or after this layer's own entries in DIR), other .wh..wh.* names are
// skipped. The marker itself is never created.
//
// Whiteouts only apply to lower layers (OCI image-spec, layer.md): what this layer put at NAME
// earlier stays. A file or symlink there is this layer's own (it replaced the lower one), so
// the whiteout does nothing; a directory this layer created or wrote into loses its lower
// contents, like an opaque directory, and keeps this layer's entries.
func (a *applier) whiteout(hdr *tar.Header, dir, base string) error {
	if a.upper != nil {
		return a.whiteoutUpper(hdr, dir, base)
	}
	if base == OpaqueWhiteout {
		d := opaqueDir{name: dir}
		if c, ok := a.knownDir(dir); ok {
			d.real, d.gen = c.real, a.parents.invalidations+1
		}
		a.opaque = append(a.opaque, d)
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
	real := joinName(a.parentReal, target)
	var st unix.Stat_t
	err = a.writable(pfd, func() error { return unix.Fstatat(pfd, target, &st, unix.AT_SYMLINK_NOFOLLOW) })
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return entryErr(hdr, "whiteout", err)
	}
	if _, mine := a.created[real]; mine {
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			a.opaque = append(a.opaque, opaqueDir{name: real, whiteout: true})
		}
		return nil
	}
	if err := a.removeAt(pfd, target, st.Mode); err != nil {
		return entryErr(hdr, "whiteout", err)
	}
	return nil
}

// applyOpaque removes from d everything this layer did not create. Directories this layer
// created or wrote into are kept but cleaned the same way, since an opaque directory shows
// nothing of the layers below at any depth; those it only wrote into (it has no entry for
// them) get the metadata of a directory Apply creates implicitly, as the lower directory they
// replace is hidden too. A whited-out directory that this layer does not list is such a
// directory itself.
//
// done holds the directories (by real name) already cleaned this way: a layer may name one
// directory many times, through symlinks or repeated markers, and each walk could be long.
func (a *applier) applyOpaque(d opaqueDir, done map[opaqueDir]bool) error {
	if d.gen == a.parents.invalidations+1 && a.skipFresh(d.real) {
		return nil // nothing resolves differently since the marker: no need to look
	}
	p := d.name
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
	dir := d.name
	real, realOK := a.inRootPath(fd)
	if realOK {
		dir = real
	}
	if realOK && a.skipFresh(dir) {
		return nil
	}
	key := opaqueDir{name: dir, whiteout: d.whiteout}
	if done[key] {
		return nil
	}
	done[key] = true
	if d.whiteout && dir != "." && !a.created[dir] {
		if err := a.resetDir(fd); err != nil {
			return err
		}
	}
	return a.clearLower(fd, dir, realOK)
}

// knownDir returns what the parent cache knows of dir without a syscall, if it knows its real
// name: the markers of a directory usually follow its entry.
func (a *applier) knownDir(dir string) (cachedDir, bool) {
	if dir == "" {
		return cachedDir{realOK: true}, true
	}
	if m, ok := a.parents.made[dir]; ok {
		return m, m.realOK
	}
	if c, ok := a.parents.lookup(dir); ok {
		return *c, c.realOK
	}
	return cachedDir{}, false
}

// skipFresh reports whether the opaque walk may skip the directory whose real name is dir:
// this layer made it with mkdir, so nothing below it is a lower layer's, and the directories
// below it that entries did not list were made by Apply as resetDir would leave them (0755,
// 0:0 when we create as 0:0 or are rootless, no xattrs).
func (a *applier) skipFresh(dir string) bool {
	return a.fresh[dir] && (a.ownerIsRoot || a.o.rootless)
}

// resetDir gives the directory fd refers to the metadata of a directory that Apply creates
// for an entry below it: mode 0755, owner 0:0 (rootless: no owner xattr), none of the xattrs
// a layer can set. Its time is left as it is (it is being written into now).
func (a *applier) resetDir(fd int) error {
	if !a.o.rootless {
		if err := unix.Fchownat(fd, "", 0, 0, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if err := chmodFd(fd, 0o755); err != nil {
		return err
	}
	// Rootless, a directory made writable for this layer would get its old mode back at the
	// end: the new one replaces it.
	var st unix.Stat_t
	if len(a.restore) > 0 && unix.Fstat(fd, &st) == nil {
		for i := range a.restore {
			var rst unix.Stat_t
			if unix.Fstat(a.restore[i].fd, &rst) == nil && rst.Dev == st.Dev && rst.Ino == st.Ino {
				a.restore[i].mode = 0o755
			}
		}
	}
	return a.dropXattrs(fd)
}

// dropXattrs removes from the directory fd refers to the xattrs a layer can set (user.*,
// security.capability).
func (a *applier) dropXattrs(fd int) error {
	rfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer unix.Close(rfd)
	buf := make([]byte, 4096)
	n, err := unix.Flistxattr(rfd, buf)
	if err == unix.ERANGE {
		if n, err = unix.Flistxattr(rfd, nil); err == nil {
			buf = make([]byte, n)
			n, err = unix.Flistxattr(rfd, buf)
		}
	}
	if err == unix.ENOTSUP {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listxattr: %w", err)
	}
	for name := range strings.SplitSeq(string(buf[:n]), "\x00") {
		if !strings.HasPrefix(name, "user.") && name != "security.capability" {
			continue
		}
		if err := unix.Fremovexattr(rfd, name); err != nil && err != unix.ENODATA {
			return fmt.Errorf("removexattr %s: %w", name, err)
		}
	}
	return nil
}

// clearLower removes from the directory fd refers to, whose name is dir (its real name if
// realOK), everything this layer did not create, and cleans the directories it keeps likewise.
func (a *applier) clearLower(fd int, dir string, realOK bool) error {
	ents, err := readDir(fd)
	if errors.Is(err, unix.EACCES) && a.o.rootless && a.makeWritable(fd) {
		ents, err = readDir(fd)
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		n := e.name
		p := n
		if dir != "" && dir != "." {
			p = path.Join(dir, n)
		}
		// The type comes from the directory listing (d_type): no stat per name. Only
		// filesystems that do not fill it in (DT_UNKNOWN) need one.
		mode := e.mode
		if mode == 0 {
			var st unix.Stat_t
			if err := unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				if err == unix.ENOENT {
					continue
				}
				return err
			}
			mode = st.Mode & unix.S_IFMT
		}
		if _, ok := a.created[p]; !ok {
			if err := a.removeAt(fd, n, mode); err != nil {
				return fmt.Errorf("remove %q: %w", p, err)
			}
			continue
		}
		if mode == unix.S_IFDIR {
			if realOK && a.skipFresh(p) {
				continue
			}
			cfd, err := unix.Openat(fd, n, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			if !a.created[p] {
				// Only written into: the lower directory's metadata is hidden with it.
				if err := a.resetDir(cfd); err != nil {
					unix.Close(cfd)
					return fmt.Errorf("reset %q: %w", p, err)
				}
			}
			err = a.clearLower(cfd, p, realOK)
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
	ents, err := readDir(fd)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.name
	}
	return names, nil
}

// dirent is one name of a directory listing and its file type (S_IFDIR, S_IFLNK, S_IFREG
// for any other known type), or 0 if the filesystem did not tell (DT_UNKNOWN).
type dirent struct {
	name string
	mode uint32
}

// readDir lists the directory an (O_PATH) fd refers to with getdents64 directly: os.File
// would register the fd with the poller and stat by path where d_type is unknown.
func readDir(fd int) ([]dirent, error) {
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open directory: %w", err)
	}
	defer unix.Close(dfd)
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := (*bp)[:64<<10]
	var ents []dirent
	for {
		n, err := unix.Getdents(dfd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read directory: %w", err)
		}
		if n <= 0 {
			return ents, nil
		}
		ents = parseDirents(buf[:n], ents)
	}
}

// parseDirents appends the entries of a getdents64 buffer (struct linux_dirent64: ino u64,
// off s64, reclen u16, type u8, NUL-terminated name), without "." and "..".
func parseDirents(b []byte, ents []dirent) []dirent {
	const nameOff = 19
	for len(b) >= nameOff {
		reclen := int(binary.NativeEndian.Uint16(b[16:18]))
		if reclen < nameOff || reclen > len(b) {
			break
		}
		typ, name := b[18], b[nameOff:reclen]
		b = b[reclen:]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		if len(name) == 0 || string(name) == "." || string(name) == ".." {
			continue
		}
		var mode uint32
		switch typ {
		case unix.DT_UNKNOWN:
		case unix.DT_DIR:
			mode = unix.S_IFDIR
		case unix.DT_LNK:
			mode = unix.S_IFLNK
		default:
			mode = unix.S_IFREG
		}
		ents = append(ents, dirent{name: string(name), mode: mode})
	}
	return ents
}
