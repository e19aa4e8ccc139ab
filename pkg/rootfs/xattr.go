package rootfs

import (
	"archive/tar"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

const paxXattrPrefix = "SCHILY.xattr."

// keepXattr reports whether an xattr from a layer may be written. Only user.* and, as root,
// security.capability are kept: trusted.* and security.selinux are the host's business, and
// overlay xattrs (trusted.overlay.*, user.overlay.*) could fake whiteouts if the tree is ever
// used as an overlayfs layer.
func (a *applier) keepXattr(name string) bool {
	switch {
	case strings.HasPrefix(name, "user.overlay."):
		return false
	case name == rootlessXattr:
		return !a.o.rootless // rootless, Apply writes its own
	case strings.HasPrefix(name, "user."):
		return true
	case name == "security.capability":
		return !a.o.rootless
	}
	return false
}

// wantsXattrs reports whether a regular file or directory entry needs xattr calls.
func (a *applier) wantsXattrs(hdr *tar.Header) bool {
	if a.o.rootless && (hdr.Uid != 0 || hdr.Gid != 0) {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, paxXattrPrefix) {
			return true
		}
	}
	return false
}

// xattrs writes the entry's allowed xattrs (and, rootless, its owner record) on fd, a regular
// file or directory. Filesystems without xattr support get one warning, not an error.
func (a *applier) xattrs(hdr *tar.Header, fd int) error {
	set := func(name string, value []byte) error {
		if len(value) > a.o.limits.MaxXattrSize {
			return entryErr(hdr, "setxattr", fmt.Errorf("%w: xattr %s of %d bytes, more than %d", ErrLimit, name, len(value), a.o.limits.MaxXattrSize))
		}
		err := unix.Fsetxattr(fd, name, value, 0)
		if err == unix.ENOTSUP {
			a.warnOnce("xattr", "filesystem does not support xattrs; dropping them", "first", hdr.Name, "xattr", name)
			return nil
		}
		if err != nil {
			return entryErr(hdr, "setxattr "+name, err)
		}
		return nil
	}
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, paxXattrPrefix)
		if !ok {
			continue
		}
		if !a.keepXattr(name) {
			if name == "security.capability" {
				a.warnOnce("capability", "dropping security.capability xattrs: not running as root", "first", hdr.Name)
			} else {
				a.o.logger.Debug("dropping xattr", "name", hdr.Name, "xattr", name)
			}
			continue
		}
		if err := set(name, []byte(v)); err != nil {
			return err
		}
	}
	if a.o.rootless {
		if v := rootlessOwner(hdr.Uid, hdr.Gid); v != nil {
			return set(rootlessXattr, v)
		}
	}
	return nil
}
