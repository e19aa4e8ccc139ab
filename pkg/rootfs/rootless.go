package rootfs

import (
	"strings"

	"golang.org/x/sys/unix"
)

// rootlessXattr records, rootless, the owner the image asked for (umoci, rootless-containers).
const rootlessXattr = "user.rootlesscontainers"

// rootlessNoop is the "unchanged" id of rootlesscontainers.Resource.
const rootlessNoop = ^uint32(0)

// rootlessOwner encodes uid:gid as umoci does: the protobuf message Resource{uint32 uid = 1;
// uint32 gid = 2}, where an id of 0 is written as 0xFFFFFFFF ("no change" from the default
// root owner) and 0:0 gives no xattr at all (nil).
func rootlessOwner(uid, gid int) []byte {
	if uid == 0 && gid == 0 {
		return nil
	}
	u, g := uint32(uid), uint32(gid)
	if uid == 0 {
		u = rootlessNoop
	}
	if gid == 0 {
		g = rootlessNoop
	}
	b := make([]byte, 0, 12)
	b = appendVarintField(b, 1, u)
	b = appendVarintField(b, 2, g)
	return b
}

// parseRootlessOwner decodes rootlessOwner's encoding (for tests and export); ok is false for
// malformed input.
func parseRootlessOwner(b []byte) (uid, gid uint32, ok bool) {
	uid, gid = rootlessNoop, rootlessNoop
	for len(b) > 0 {
		key, n := uvarint(b)
		if n <= 0 || key&7 != 0 {
			return 0, 0, false
		}
		b = b[n:]
		v, n := uvarint(b)
		if n <= 0 || v > uint64(^uint32(0)) {
			return 0, 0, false
		}
		b = b[n:]
		switch key >> 3 {
		case 1:
			uid = uint32(v)
		case 2:
			gid = uint32(v)
		}
	}
	if uid == rootlessNoop {
		uid = 0
	}
	if gid == rootlessNoop {
		gid = 0
	}
	return uid, gid, true
}

func appendVarintField(b []byte, field int, v uint32) []byte {
	b = append(b, byte(field<<3)) // wire type 0: varint
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func uvarint(b []byte) (uint64, int) {
	var x uint64
	for i, c := range b {
		if i == 10 {
			return 0, -1
		}
		x |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return x, i + 1
		}
	}
	return 0, 0
}

// writable runs op, a change inside directory pfd. Rootless, a directory without write (or
// search) permission for us makes op fail with EACCES; then the directory is made u+rwx, op
// retried, and the old mode restored at the end of the layer.
func (a *applier) writable(pfd int, op func() error) error {
	err := op()
	if err == unix.EACCES && a.o.rootless {
		if a.makeWritable(pfd) {
			err = op()
		}
	}
	return err
}

// makeWritable makes the directory fd refers to u+rwx and schedules its old mode's return;
// it reports whether anything changed.
func (a *applier) makeWritable(fd int) bool {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&0o700 == 0o700 {
		return false
	}
	key := devIno{uint64(st.Dev), st.Ino}
	if a.restoreSeen == nil {
		a.restoreSeen = make(map[devIno]bool)
	}
	if a.restoreSeen[key] {
		return false
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return false
	}
	if chmodFd(fd, st.Mode&0o7777|0o700) != nil {
		unix.Close(dup)
		return false
	}
	a.restoreSeen[key] = true
	a.restore = append(a.restore, modeFix{fd: dup, mode: st.Mode & 0o7777})
	return true
}

// makeTraversable makes every directory on the way to dir searchable (rootless: a lower layer
// may have left a directory without u+x).
func (a *applier) makeTraversable(dir string) error {
	a.makeWritable(a.rootFd)
	p := ""
	for c := range strings.SplitSeq(dir, "/") {
		if p == "" {
			p = c
		} else {
			p += "/" + c
		}
		fd, err := resolveInRoot(a.rootFd, p, 0)
		if err != nil {
			return err
		}
		a.makeWritable(fd)
		unix.Close(fd)
	}
	return nil
}
