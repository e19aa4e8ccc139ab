package rootfs

import (
	"archive/tar"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNeedsLowers reports a layer that cannot be applied on its own into a snapshot (an
// overlayfs layer composed at run time) because what it does depends on the layers below it
// in a way an overlay cannot express: it writes through a symlink, hard-links a file of a
// lower layer, holds a character device 0:0 (an overlay whiteout), makes the root opaque, or
// writes below a lower layer's non-directory. Such images are flattened instead.
var ErrNeedsLowers = errors.New("layer depends on the layers below it")

// Overlay layer format (Documentation/filesystems/overlayfs.rst): a whiteout is a character
// device 0:0, an opaque directory carries trusted.overlay.opaque = "y".
const (
	overlayOpaqueXattr  = "trusted.overlay.opaque"
	overlayXattrPrefix  = "trusted.overlay."
	overlayOpaqueOnDisk = "y"
)

// upperState is what applying a layer in upper mode (into an empty directory, as an overlayfs
// layer) leaves for [finishUpper], which runs once the layers below are complete.
type upperState struct {
	// implicit holds the directories Apply made for entries below them without an entry of
	// their own ("" is the root until a "." entry lists it): they must get the metadata the
	// lower layers give that path, as a flat Apply writing into them would keep it.
	implicit map[string]bool
	// hidden holds directories whose lower contents and metadata are hidden: made over this
	// layer's own whiteout, or whited out after this layer wrote into them.
	hidden map[string]bool
	// whiteouts holds the whiteout devices made: those that hide nothing are removed, as
	// overlayfs lists a directory that only one layer has as it is, whiteouts included.
	whiteouts []string
	// opaque holds the directories marked opaque (real names; some may be gone by the end):
	// a merge into one tree removes the marks.
	opaque []string
	// inMarker is set while a whiteout or opaque marker resolves its directory: those never
	// replace this layer's own whiteout by a directory (what they name is deleted already).
	inMarker bool
}

func newUpperState() *upperState {
	return &upperState{implicit: map[string]bool{"": true}, hidden: map[string]bool{}}
}

func needsLowers(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrNeedsLowers, fmt.Sprintf(format, args...))
}

func isWhiteoutDev(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// setOpaque marks the directory base in pfd opaque for overlayfs.
func setOpaque(pfd int, base string) error {
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open to mark opaque: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Fsetxattr(fd, overlayOpaqueXattr, []byte(overlayOpaqueOnDisk), 0); err != nil {
		return fmt.Errorf("mark opaque: %w", err)
	}
	return nil
}

// markOpaque marks the directory base in pfd, whose real name is name, opaque.
func (a *applier) markOpaque(pfd int, base, name string) error {
	a.upper.opaque = append(a.upper.opaque, name)
	return setOpaque(pfd, base)
}

// whiteoutUpper is whiteout in upper mode: DIR/.wh.NAME becomes an overlay whiteout at NAME
// (unless this layer made NAME: a file stays, a directory it made or wrote into becomes
// opaque), DIR/.wh..wh..opq marks DIR opaque. The directories on the way are made as for
// any entry; [finishUpper] removes those that turn out to hide nothing.
func (a *applier) whiteoutUpper(hdr *tar.Header, dir, base string) error {
	if base == OpaqueWhiteout {
		if dir == "" {
			return entryErr(hdr, "whiteout", needsLowers("opaque root"))
		}
		fd, err := a.markerParent(dir)
		if err != nil {
			return entryErr(hdr, "whiteout", err)
		}
		if fd < 0 {
			return nil
		}
		if err := a.markOpaque(fd, ".", dir); err != nil {
			return entryErr(hdr, "whiteout", err)
		}
		return nil
	}
	target := base[len(WhiteoutPrefix):]
	if strings.HasPrefix(base, WhiteoutMetaPrefix) {
		a.o.logger.Debug("skipping whiteout meta entry", "name", hdr.Name)
		return nil
	}
	if target == "" || target == "." || target == ".." {
		return entryErr(hdr, "whiteout", fmt.Errorf("%w: invalid whiteout name %q", ErrUnsafePath, base))
	}
	pfd, err := a.markerParent(dir)
	if err != nil {
		return entryErr(hdr, "whiteout", err)
	}
	if pfd < 0 {
		return nil
	}
	real := joinName(a.parentReal, target)
	var st unix.Stat_t
	switch err := unix.Fstatat(pfd, target, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == unix.ENOENT:
	case err != nil:
		return entryErr(hdr, "whiteout", err)
	case isWhiteoutDev(&st):
		return nil
	default:
		if _, mine := a.created[real]; mine {
			if st.Mode&unix.S_IFMT == unix.S_IFDIR {
				a.upper.hidden[real] = true
				if err := a.markOpaque(pfd, target, real); err != nil {
					return entryErr(hdr, "whiteout", err)
				}
			}
			return nil
		}
		// Only directories made for other whiteouts or markers: the whole lower NAME goes.
		if err := a.removeAt(pfd, target, st.Mode); err != nil {
			return entryErr(hdr, "whiteout", err)
		}
	}
	if err := unix.Mknodat(pfd, target, unix.S_IFCHR, 0); err != nil {
		return entryErr(hdr, "whiteout", fmt.Errorf("mknod whiteout: %w", err))
	}
	a.upper.whiteouts = append(a.upper.whiteouts, real)
	return nil
}

// markerParent resolves (creating) the directory of a whiteout or opaque marker in upper
// mode; -1 and no error if this layer deleted or replaced it already (nothing to do then).
func (a *applier) markerParent(dir string) (int, error) {
	a.upper.inMarker = true
	fd, err := a.parent(dir, true)
	a.upper.inMarker = false
	if errors.Is(err, unix.ENOTDIR) {
		return -1, nil
	}
	return fd, err
}

// replaceWhiteout, in upper mode, replaces an overlay whiteout at base in pfd (made by an
// earlier whiteout entry of this layer) by a directory for name: the lower directory is
// gone, so the new one is opaque and keeps the metadata of a new directory. It reports
// whether there was such a whiteout.
func (a *applier) replaceWhiteout(pfd int, base, name string) (bool, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || !isWhiteoutDev(&st) {
		return false, nil
	}
	if err := unix.Unlinkat(pfd, base, 0); err != nil {
		return true, fmt.Errorf("replace whiteout %q: %w", name, err)
	}
	if err := unix.Mkdirat(pfd, base, 0o755); err != nil {
		return true, fmt.Errorf("mkdir %q: %w", name, err)
	}
	if err := chmodAt(pfd, base, 0o755); err != nil {
		return true, err
	}
	a.upper.implicit[name] = true
	a.upper.hidden[name] = true
	return true, a.markOpaque(pfd, base, name)
}

// finishUpper completes a layer applied in upper mode into dir, now that the layers below it
// (lowers, top first, each a finished snapshot) are complete: directories the layer only wrote
// into get the metadata those layers give them, and directories and whiteouts that hide
// nothing no lower layer has are removed. It fails with [ErrNeedsLowers] where the layer
// wrote below a lower layer's non-directory (a flat Apply would follow a symlink there).
//
// The layer's own entries may have replaced a directory on the way by a symlink: every name
// in dir is resolved from dir's fd without following symlinks, so nothing outside is touched.
func finishUpper(dir string, st *upperState, created map[string]bool, lowers []string, o *applyOptions) error {
	rootFd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	a := newApplier(o, rootFd) // for removeAt
	defer a.close()
	names := make([]string, 0, len(st.implicit))
	for n := range st.implicit {
		names = append(names, n)
	}
	depth := func(n string) int {
		if n == "" {
			return -1
		}
		return strings.Count(n, "/")
	}
	// Parents first: a removed parent takes its implicit children with it.
	slices.SortFunc(names, func(x, y string) int {
		if d := depth(x) - depth(y); d != 0 {
			return d
		}
		return strings.Compare(x, y)
	})
	for _, n := range names {
		if st.hidden[n] {
			continue
		}
		if err := a.finishImplicit(dir, n, created, lowers); err != nil {
			return err
		}
	}
	for _, n := range st.whiteouts {
		if err := a.finishWhiteout(dir, n, lowers); err != nil {
			return err
		}
	}
	return nil
}

// openUpper opens name's parent in the upper layer without following symlinks and checks
// that base is there with type typ; ok is false if it is not (replaced or removed later in the
// layer). The caller closes pfd when ok.
func (a *applier) openUpper(n string, typ uint32) (pfd int, base string, ok bool, err error) {
	pdir, base := splitName(n)
	if n == "" {
		pdir, base = "", "."
	}
	pfd, err = resolveInRootHow(a.rootFd, orDot(pdir), 0, unix.RESOLVE_NO_SYMLINKS)
	if err != nil {
		if gone(err) || err == unix.ELOOP {
			return -1, "", false, nil
		}
		return -1, "", false, err
	}
	var fst unix.Stat_t
	if err := unix.Fstatat(pfd, base, &fst, unix.AT_SYMLINK_NOFOLLOW); err != nil || fst.Mode&unix.S_IFMT != typ ||
		(typ == unix.S_IFCHR && !isWhiteoutDev(&fst)) {
		unix.Close(pfd)
		return -1, "", false, nil
	}
	return pfd, base, true, nil
}

func orDot(n string) string {
	if n == "" {
		return "."
	}
	return n
}

// finishImplicit gives the implicit directory n the lower layers' metadata, or removes it if
// they have no directory there and this layer put nothing real in it.
func (a *applier) finishImplicit(dir, n string, created map[string]bool, lowers []string) error {
	pfd, base, ok, err := a.openUpper(n, unix.S_IFDIR)
	if err != nil || !ok {
		return err
	}
	defer unix.Close(pfd)
	lower, kind, err := lowerLookup(dir, lowers, n)
	if err != nil {
		return err
	}
	switch kind {
	case lowerNonDir:
		return needsLowers("%q is written into but is not a directory in the layers below", "/"+n)
	case lowerAbsent:
		if _, ok := created[n]; !ok && n != "" {
			// Only whiteouts or opaque markers of things no lower layer has.
			return a.removeAt(pfd, base, unix.S_IFDIR)
		}
	case lowerDir:
		fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := copyDirMeta(lower, fd); err != nil {
			return fmt.Errorf("directory %q: %w", "/"+n, err)
		}
	}
	return nil
}

// finishWhiteout removes the whiteout n if no lower layer has anything there.
func (a *applier) finishWhiteout(dir, n string, lowers []string) error {
	pfd, base, ok, err := a.openUpper(n, unix.S_IFCHR)
	if err != nil || !ok {
		return err
	}
	defer unix.Close(pfd)
	_, kind, err := lowerLookup(dir, lowers, n)
	if err != nil || kind != lowerAbsent {
		return err
	}
	return unix.Unlinkat(pfd, base, 0)
}

type lowerKind int

const (
	lowerAbsent lowerKind = iota
	lowerDir
	lowerNonDir
)

// lowerLookup finds what the layers below upper (lowers, top first) show at the clean name n
// under overlayfs' rules, given that upper has a directory there: the path of the topmost
// lower directory, or that there is none, or that a lower non-directory is there. Ancestors
// are merged across upper and lowers: a whiteout hides the name in the layers below it, an
// opaque directory ends the merge, a non-directory under a directory is ignored.
func lowerLookup(upper string, lowers []string, n string) (string, lowerKind, error) {
	if n == "" {
		if len(lowers) == 0 {
			return "", lowerAbsent, nil
		}
		return lowers[0], lowerDir, nil
	}
	dirs := append([]string{upper}, lowers...)
	inUpper := true // dirs[0] is the upper's
	comps := strings.Split(n, "/")
	for i, c := range comps {
		last := i == len(comps)-1
		var next []string
		nextInUpper := false
		for j, d := range dirs {
			if j == 0 && inUpper {
				if last {
					continue // the name itself: only the layers below count
				}
				nextInUpper = true // upper has every ancestor of n as a directory
			}
			p := filepath.Join(d, c)
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				if err == unix.ENOENT {
					continue
				}
				return "", 0, err
			}
			if isWhiteoutDev(&st) {
				break
			}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				if len(next) == 0 && last {
					return "", lowerNonDir, nil
				}
				break
			}
			next = append(next, p)
			if isOpaqueDir(p) {
				break
			}
		}
		if len(next) == 0 || (len(next) == 1 && nextInUpper) {
			return "", lowerAbsent, nil
		}
		dirs, inUpper = next, nextInUpper
	}
	return dirs[0], lowerDir, nil
}

func isOpaqueDir(p string) bool {
	buf := make([]byte, 4)
	n, err := unix.Lgetxattr(p, overlayOpaqueXattr, buf)
	return err == nil && string(buf[:n]) == overlayOpaqueOnDisk
}

// copyDirMeta gives the open directory fd the owner, mode and xattrs of the directory src
// (overlay xattrs excepted: fd's own opaque mark stays).
func copyDirMeta(src string, fd int) error {
	sfd, err := unix.Open(src, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(sfd)
	return copyMeta(sfd, fd, false)
}

// copyMeta gives the directory dst the owner, mode, xattrs (overlay ones excepted) and, with
// times, the times of the directory src. chown comes first: it clears setgid bits.
func copyMeta(src, dst int, times bool) error {
	var st unix.Stat_t
	if err := unix.Fstat(src, &st); err != nil {
		return err
	}
	if err := unix.Fchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if err := unix.Fchmod(dst, st.Mode&0o7777); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	p := procFd(src)
	names, err := listXattrs(p)
	if err != nil {
		return err
	}
	for _, name := range names {
		if strings.HasPrefix(name, overlayXattrPrefix) {
			continue
		}
		v, err := getXattr(p, name)
		if err != nil {
			return err
		}
		if err := unix.Fsetxattr(dst, name, v, 0); err != nil {
			return fmt.Errorf("setxattr %s: %w", name, err)
		}
	}
	if !times {
		return nil
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, procFd(dst), ts, 0); err != nil {
		return fmt.Errorf("utimensat: %w", err)
	}
	return nil
}

// listXattrs lists the xattrs of what p points to (a /proc/self/fd link).
func listXattrs(p string) ([]string, error) {
	n, err := unix.Listxattr(p, nil)
	if err == unix.ENOTSUP || n == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listxattr: %w", err)
	}
	buf := make([]byte, n)
	n, err = unix.Listxattr(p, buf)
	if err != nil {
		return nil, fmt.Errorf("listxattr: %w", err)
	}
	var names []string
	for name := range strings.SplitSeq(string(buf[:n]), "\x00") {
		if name != "" {
			names = append(names, name)
		}
	}
	return names, nil
}

// getXattr reads the xattr name of what p points to (a /proc/self/fd link).
func getXattr(p, name string) ([]byte, error) {
	n, err := unix.Getxattr(p, name, nil)
	if err != nil {
		return nil, fmt.Errorf("getxattr %s: %w", name, err)
	}
	buf := make([]byte, n)
	n, err = unix.Getxattr(p, name, buf)
	if err != nil {
		return nil, fmt.Errorf("getxattr %s: %w", name, err)
	}
	return buf[:n], nil
}
