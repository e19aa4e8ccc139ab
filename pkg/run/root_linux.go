package run

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// How the init enters the run's root, and why the old root stays out of reach.
//
// pivot_root (the default) makes the new root the root of the mount namespace and the host's
// tree a mount below it, which the init then detaches: the namespace holds no trace of the
// host's tree, so nothing can reach it, whatever the run's capabilities.
//
// pivot_root cannot work where the namespace's root is the initial ramfs (an initramfs root:
// it cannot be unmounted, so the kernel refuses to pivot away from it with EINVAL), and
// Spec.NoPivot (runc's --no-pivot) asks not to use it. Then the new root is moved (MS_MOVE) on
// top of the namespace's root and chrooted into, as runc's msMoveRoot does. The host's tree
// stays in the namespace, under the run's root, but out of reach:
//
//   - a path walk that reaches the top of the run's root with ".." lands on the namespace's
//     root directory, on which the run's root is mounted, and the kernel follows that mount
//     back down: "/.." and the classic chroot escape (mkdir x; chroot x; chdir ".." N times;
//     chroot ".") end in the run's root (TestRunNoPivot checks it, as root with
//     CAP_SYS_CHROOT). So CAP_SYS_CHROOT stays in the run's set, as in docker's default set;
//   - uncovering the host's tree would need unmounting the run's root: that needs
//     CAP_SYS_ADMIN in the namespace's owner (a run has not), and in a user namespace made
//     by the run (Unconfined) the inherited mounts are locked together and cannot be split;
//   - no process outside the run's root is in the run's PID namespace, and the init (whose
//     root is the run's root too) is not dumpable, so /proc/N/root and /proc/N/cwd lead
//     nowhere else.
//
// Moving the root onto "/" only hides the host's tree when "/" is the namespace's root: when
// imgrun runs inside a chroot of a plain directory, the init first leaves that chroot (it is
// root in a mount namespace of its own) and moves the run's root over the namespace's real
// root. In that case pivot_root also works from the real root, so it is tried again there.
//
// What stays weaker than pivot_root: a process with CAP_SYS_ADMIN over the namespace (never a
// run's command) could unmount the run's root and see the host's tree again.

// enterRoot makes root the process's "/" and its working directory, by pivot_root unless
// noPivot, and leaves the host's tree out of reach (see above).
func enterRoot(root *os.File, noPivot bool) error {
	if noPivot {
		return moveRoot(root)
	}
	err := pivotRoot(root)
	if !errors.Is(err, unix.EINVAL) {
		return err
	}
	// EINVAL: "/" is not a mount point (a chroot) or it is the initial ramfs. Retry from the
	// namespace's real root, then move the root instead.
	if err := leaveChroot(root); err != nil {
		return err
	}
	if err = pivotRoot(root); !errors.Is(err, unix.EINVAL) {
		return err
	}
	return moveRoot(root)
}

// pivotRoot pivots into root and detaches the old root.
func pivotRoot(root *os.File) error {
	if err := unix.Fchdir(int(root.Fd())); err != nil {
		return &os.PathError{Op: "chdir", Path: root.Name(), Err: err}
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return &os.PathError{Op: "pivot_root", Path: root.Name(), Err: err}
	}
	// The old root is stacked on "."; keep its unmount from propagating anywhere, then drop it.
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return &os.PathError{Op: "make old root slave", Path: "/", Err: err}
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return &os.PathError{Op: "detach old root", Path: "/", Err: err}
	}
	return unix.Chdir("/")
}

// moveRoot moves root over the mount namespace's root and chroots into it.
func moveRoot(root *os.File) error {
	if err := leaveChroot(root); err != nil {
		return err
	}
	if err := unix.Fchdir(int(root.Fd())); err != nil {
		return &os.PathError{Op: "chdir", Path: root.Name(), Err: err}
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return &os.PathError{Op: "move root", Path: root.Name(), Err: err}
	}
	if err := unix.Chroot("."); err != nil {
		return &os.PathError{Op: "chroot", Path: root.Name(), Err: err}
	}
	return unix.Chdir("/")
}

// leaveChroot makes the mount namespace's root directory the process's root and working
// directory, when the process runs in a chroot (otherwise nothing changes). It is the classic
// chroot escape, legitimate here: the init is root in a mount namespace of its own and the
// chroot it leaves is the launcher's, not the run's. inside is any directory other than "/".
func leaveChroot(inside *os.File) error {
	top, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: "/", Err: err}
	}
	defer unix.Close(top)
	// Root inside, working directory the old "/": ".." is no longer stopped at the old "/".
	if err := unix.Fchdir(int(inside.Fd())); err != nil {
		return &os.PathError{Op: "chdir", Path: inside.Name(), Err: err}
	}
	if err := unix.Chroot("."); err != nil {
		return &os.PathError{Op: "chroot", Path: inside.Name(), Err: err}
	}
	if err := unix.Fchdir(top); err != nil {
		return &os.PathError{Op: "chdir", Path: "/", Err: err}
	}
	for range 4096 {
		var here, up unix.Stat_t
		if err := unix.Stat(".", &here); err != nil {
			return &os.PathError{Op: "stat", Path: ".", Err: err}
		}
		if err := unix.Stat("..", &up); err != nil {
			return &os.PathError{Op: "stat", Path: "..", Err: err}
		}
		if here.Dev == up.Dev && here.Ino == up.Ino {
			if err := unix.Chroot("."); err != nil {
				return &os.PathError{Op: "chroot", Path: "/", Err: err}
			}
			return nil
		}
		if err := unix.Chdir(".."); err != nil {
			return &os.PathError{Op: "chdir", Path: "..", Err: err}
		}
	}
	return fmt.Errorf("leave chroot: no top directory after 4096 levels")
}

// makeMountsPrivate makes every mount of the run's mount namespace private, so that nothing the
// init mounts propagates to the host's namespace. When imgrun runs in a chroot of a plain
// directory, "/" is not a mount point and mount(2) refuses it (EINVAL), while the mount that
// holds it may well be shared with the host: then the init leaves the chroot, makes every
// mount private from the namespace's real root and returns to the chroot. rootfs is a
// directory inside the chroot (any but "/").
func makeMountsPrivate(rootfs string) error {
	err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
	if err == nil || !errors.Is(err, unix.EINVAL) {
		return wrapPrivate(err)
	}
	back, err := os.OpenFile("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer back.Close()
	inside, err := os.OpenFile(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer inside.Close()
	if err := leaveChroot(inside); err != nil {
		return err
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return wrapPrivate(err)
	}
	if err := unix.Fchdir(int(back.Fd())); err != nil {
		return &os.PathError{Op: "chdir", Path: "/", Err: err}
	}
	if err := unix.Chroot("."); err != nil {
		return &os.PathError{Op: "chroot", Path: "/", Err: err}
	}
	return nil
}

func wrapPrivate(err error) error {
	if err == nil {
		return nil
	}
	return &os.PathError{Op: "make mounts private", Path: "/", Err: err}
}
