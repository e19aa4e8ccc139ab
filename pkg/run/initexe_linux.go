package run

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// The run's init is this program's own binary, and it stays PID 1 of the run. What the run can
// reach of it is what CVE-2019-5736 used: a command `#!/proc/self/exe` makes the kernel execute
// the binary of the process that executes the command, and a process of the run then opens
// /proc/N/exe of that process and, once nothing executes it, writes through it over the host's
// binary. So the launcher executes the init not from its path but from a view of the binary
// that cannot be written:
//
//   - a detached, read-only bind mount of /proc/self/exe (open_tree(OPEN_TREE_CLONE) +
//     mount_setattr(MOUNT_ATTR_RDONLY)): two system calls, no copy, and the mount exists in no
//     mount namespace (it goes away with its last user). Writing through any /proc/N/exe of
//     the run fails with EROFS, and the run has no way to make a mount writable (no
//     CAP_SYS_ADMIN; seccomp refuses the mount API). This is runc's exeseal "overlayfs" idea,
//     done with a bind mount. It needs CAP_SYS_ADMIN in the caller's mount namespace: root.
//   - without it (a rootless run): the binary itself when the caller cannot write it (then
//     neither can the run, whose root is the caller); else a sealed memfd copy (F_SEAL_WRITE,
//     SHRINK, GROW, SEAL), as runc did first, which costs copying the binary once per process
//     (cached for later runs).
//
// The init is non-dumpable besides (see MaybeInit), so /proc/1/exe, /proc/1/mem and friends
// cannot even be opened from inside by a run without CAP_SYS_PTRACE.

// initExecutable returns the file the launcher executes as the init, made once per process.
var initExecutable = sync.OnceValues(openInitExecutable)

func openInitExecutable() (*os.File, error) {
	f, err := readOnlyExecutable()
	if err == nil {
		return f, nil
	}
	// A binary the caller cannot write (root's, as installed) needs no copy: a rootless run's
	// root is the caller, and its capabilities cover only the caller's own files.
	if werr := unix.Faccessat(unix.AT_FDCWD, "/proc/self/exe", unix.W_OK, unix.AT_EACCESS); werr == unix.EACCES || werr == unix.EROFS {
		if f, oerr := os.OpenFile("/proc/self/exe", unix.O_PATH|unix.O_CLOEXEC, 0); oerr == nil {
			return f, nil
		}
	}
	f, serr := sealedExecutable()
	if serr != nil {
		return nil, fmt.Errorf("protect the init's executable (CVE-2019-5736): %w", errors.Join(err, serr))
	}
	return f, nil
}

// readOnlyExecutable returns this binary through a detached read-only bind mount.
func readOnlyExecutable() (*os.File, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, "/proc/self/exe", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return nil, &os.PathError{Op: "open_tree", Path: "/proc/self/exe", Err: err}
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "mount_setattr read-only", Path: "/proc/self/exe", Err: err}
	}
	return os.NewFile(uintptr(fd), "imgrun-init (read-only)"), nil
}

// sealedExecutable returns a sealed in-memory copy of this binary.
func sealedExecutable() (*os.File, error) {
	const flags = unix.MFD_CLOEXEC | unix.MFD_ALLOW_SEALING
	fd, err := unix.MemfdCreate("imgrun-init", flags|unix.MFD_EXEC) // vm.memfd_noexec=1 needs MFD_EXEC
	if errors.Is(err, unix.EINVAL) {
		fd, err = unix.MemfdCreate("imgrun-init", flags) // a kernel before 6.3
	}
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "imgrun-init (sealed copy)")
	src, err := os.Open("/proc/self/exe")
	if err != nil {
		f.Close()
		return nil, err
	}
	defer src.Close()
	if _, err := io.Copy(f, src); err != nil { // copy_file_range or sendfile: no user-space copy
		f.Close()
		return nil, fmt.Errorf("copy /proc/self/exe: %w", err)
	}
	const seals = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal copy of /proc/self/exe: %w", err)
	}
	return f, nil
}
