package run

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// A layer stack (Spec.Lowers) is mounted with the mount API: fsopen("overlay"), one
// fsconfig("lowerdir+") per layer, fsmount and move_mount. mount(2) copies its options from
// one page (4096 bytes on x86), which holds about 40 paths of a snapshot store
// (/var/lib/imgrun/snapshots/<64 hex digits>) while an image may have 127 layers; "lowerdir+"
// takes one layer at a time, without escapes, and has no such limit. It is Linux 6.8's: on an
// older kernel the overlay falls back to mount(2), naming each layer by its /proc/self/fd link
// when the paths do not fit (about 18 bytes a layer). The init mounts the root before it
// installs its seccomp filter (which refuses the mount API to the command): see initMain.

// errNoLowerdirAdd means the kernel lacks the mount API or overlayfs's "lowerdir+".
var errNoLowerdirAdd = errors.New(`no fsopen or overlayfs "lowerdir+" (Linux 6.8)`)

// fsmount mounts the overlay on target through the mount API. It returns errNoLowerdirAdd
// (wrapped) when the kernel has not got it.
func (ov overlay) fsmount(target string) error {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	// EPERM too: a seccomp profile of an outer container runtime may know only mount(2).
	if notSupported(err) || errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%w: fsopen: %v", errNoLowerdirAdd, err)
	}
	if err != nil {
		return &os.PathError{Op: "fsopen", Path: "overlay", Err: err}
	}
	defer unix.Close(fsfd)
	// The source mount(2) gets ("none" otherwise), for those who read /proc/self/mountinfo.
	if err := unix.FsconfigSetString(fsfd, "source", "overlay"); err != nil {
		return fsContextError(fsfd, "source", err)
	}
	for i, l := range ov.lowers {
		err := unix.FsconfigSetString(fsfd, "lowerdir+", l)
		if i == 0 && notSupported(err) {
			return fmt.Errorf("%w: %v", errNoLowerdirAdd, fsContextError(fsfd, "lowerdir+ "+l, err))
		}
		if err != nil {
			return fsContextError(fsfd, fmt.Sprintf("layer %d of %d: lowerdir+ %s", i+1, len(ov.lowers), l), err)
		}
	}
	// upperdir and workdir are unescaped (\) even here: name such paths by their links.
	var links fdLinks
	defer links.close()
	for _, kv := range [][2]string{{"upperdir", ov.upper}, {"workdir", ov.work}} {
		p, err := links.path(kv[1], false)
		if err != nil {
			return err
		}
		if err := unix.FsconfigSetString(fsfd, kv[0], p); err != nil {
			return fsContextError(fsfd, kv[0]+" "+kv[1], err)
		}
	}
	for _, flag := range ov.flags() {
		if err := unix.FsconfigSetFlag(fsfd, flag); err != nil {
			return fsContextError(fsfd, flag, err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return fsContextError(fsfd, fmt.Sprintf("create (%d layers)", len(ov.lowers)), err)
	}
	attr := unix.MOUNT_ATTR_NODEV
	if ov.nosuid {
		attr |= unix.MOUNT_ATTR_NOSUID
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, attr)
	if err != nil {
		return fsContextError(fsfd, "fsmount", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return &os.PathError{Op: "move overlay mount to", Path: target, Err: err}
	}
	return nil
}

// flags are the overlay's options without a value.
func (ov overlay) flags() []string {
	var f []string
	if ov.volatile {
		f = append(f, "volatile")
	}
	if ov.userxattr {
		f = append(f, "userxattr")
	}
	return f
}

// notSupported reports whether err says a system call or an option does not exist.
func notSupported(err error) bool {
	return errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP)
}

// fsContextError wraps err of an fsconfig step with the kernel's reason, which it logs in the
// file system context (e.g. "overlay: failed to resolve '/x': -2") rather than in errno.
func fsContextError(fsfd int, step string, err error) error {
	if msg := fsContextLog(fsfd); msg != "" {
		return fmt.Errorf("overlay %s: %w (%s)", step, err, msg)
	}
	return fmt.Errorf("overlay %s: %w", step, err)
}

// fsContextLog reads the messages an fs context holds, one per read, "e "/"w "/"i " first.
func fsContextLog(fsfd int) string {
	var msgs []string
	buf := make([]byte, 1024)
	for range 16 {
		n, err := unix.Read(fsfd, buf)
		if err != nil || n <= 0 {
			break
		}
		msg := strings.TrimSpace(string(buf[:n]))
		if len(msg) > 2 && msg[1] == ' ' {
			msg = msg[2:]
		}
		msgs = append(msgs, strings.ReplaceAll(msg, "\n", " "))
	}
	return strings.Join(msgs, "; ")
}
