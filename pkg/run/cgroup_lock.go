package run

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// A run that creates cgroups first creates and flocks (LOCK_EX) a lock file named after its id in
// cgroupLockDir, and holds it until Close has removed its cgroups. cleanupStaleCgroups takes a
// cgroup for its run's iff that file exists and is locked, so there is no window in which a live
// run's cgroup looks stale (the lock comes before any mkdir) and no guessing from times (kernfs
// gives a re-read cgroup inode the current time as its mtime).

// lockWait bounds how long newCgroup waits for a run lock held by someone else: cleanupStaleCgroups
// holds a free-looking one only for a few rmdirs.
const lockWait = time.Second

// cgroupLockRoot overrides cgroupLockDir when set (tests).
var cgroupLockRoot string

// cgroupLockDir is the directory of the run lock files: /run/imgrun/cgroups for root, otherwise
// $XDG_RUNTIME_DIR/imgrun/cgroups, or imgrun-<uid>/cgroups in os.TempDir() without one.
func cgroupLockDir() string {
	switch {
	case cgroupLockRoot != "":
		return cgroupLockRoot
	case os.Geteuid() == 0:
		return "/run/imgrun/cgroups"
	case os.Getenv("XDG_RUNTIME_DIR") != "":
		return filepath.Join(os.Getenv("XDG_RUNTIME_DIR"), "imgrun", "cgroups")
	}
	return filepath.Join(os.TempDir(), "imgrun-"+strconv.Itoa(os.Geteuid()), "cgroups")
}

// makeLockDir creates dir (0700) and checks that it, and its parent when rootless (a shared
// os.TempDir() lets other users create it first), belong to us and are private.
func makeLockDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cgroup lock dir: %w", err)
	}
	check := []string{dir}
	if os.Geteuid() != 0 {
		check = append(check, filepath.Dir(dir))
	}
	for _, d := range check {
		var st unix.Stat_t
		if err := unix.Lstat(d, &st); err != nil {
			return fmt.Errorf("cgroup lock dir: %w", &os.PathError{Op: "lstat", Path: d, Err: err})
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 {
			return fmt.Errorf("cgroup lock dir: %s is not a directory of uid %d writable only by it", d, os.Geteuid())
		}
	}
	return nil
}

// runLock is a held run lock file.
type runLock struct {
	fd   int
	path string
}

// lockRun creates and locks the lock file of run id. The warm path is one open, one flock and the
// fstat+stat that prove no cleanup unlinked the file between the open and the flock (a lock on an
// unlinked file would protect nothing); then it starts over.
func lockRun(id string) (*runLock, error) {
	dir := cgroupLockDir()
	p := dir + "/" + id
	deadline := time.Now().Add(lockWait)
	made := false
	for delay := 100 * time.Microsecond; ; delay = min(2*delay, 10*time.Millisecond) {
		fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err == unix.ENOENT && !made {
			if err := makeLockDir(dir); err != nil {
				return nil, fmt.Errorf("cgroup: %w", err)
			}
			made = true
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("cgroup: %w", &os.PathError{Op: "open", Path: p, Err: err})
		}
		err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil && sameFile(fd, p) {
			return &runLock{fd: fd, path: p}, nil
		}
		unix.Close(fd)
		if err != nil && err != unix.EWOULDBLOCK && err != unix.EINTR {
			return nil, fmt.Errorf("cgroup: %w", &os.PathError{Op: "flock", Path: p, Err: err})
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("cgroup: run %s: lock %s is held by another process", id, p)
		}
		time.Sleep(delay)
	}
}

// release removes the lock file, then drops the lock. Close calls it after removing the cgroups,
// also when that failed: a missing lock file lets the next cleanupStaleCgroups retry them.
func (l *runLock) release() {
	if l == nil || l.fd < 0 {
		return
	}
	if sameFile(l.fd, l.path) { // never someone else's file (only a bug could have unlinked ours)
		_ = unix.Unlink(l.path) // still locked: no other process acts on it meanwhile
	}
	unix.Close(l.fd)
	l.fd = -1
}

// sameFile reports whether the open fd is the file now at path.
func sameFile(fd int, path string) bool {
	var a, b unix.Stat_t
	return unix.Fstat(fd, &a) == nil && unix.Stat(path, &b) == nil && a.Dev == b.Dev && a.Ino == b.Ino
}

// reapRun removes the empty cgroup dirs of run id and its lock file, unless the run is alive: its
// lock file exists and is locked. Busy dirs (rmdir EBUSY: processes remain) are left. The lock is
// held while removing, so a run cannot start under the same lock meanwhile.
func reapRun(lockDir, id string, dirs []string) error {
	p := lockDir + "/" + id
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	switch {
	case err == unix.ENOENT:
		if len(dirs) > 0 && dirLocked(dirs[0]) {
			return nil
		}
	case err != nil:
		return fmt.Errorf("cgroup cleanup: %w", &os.PathError{Op: "open", Path: p, Err: err})
	default:
		defer unix.Close(fd)
		if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) != nil || !sameFile(fd, p) {
			return nil // the run is alive, or another cleanup got here first
		}
	}
	var errs []error
	for _, d := range dirs {
		if err := unix.Rmdir(d); err != nil && err != unix.ENOENT && err != unix.EBUSY {
			errs = append(errs, fmt.Errorf("cgroup cleanup: %w", &os.PathError{Op: "rmdir", Path: d, Err: err}))
		}
	}
	if fd >= 0 {
		if err := unix.Unlink(p); err != nil && err != unix.ENOENT {
			errs = append(errs, fmt.Errorf("cgroup cleanup: %w", &os.PathError{Op: "unlink", Path: p, Err: err}))
		}
	}
	return errors.Join(errs...)
}

// dirLocked reports whether a run of an older imgrun, which flocked its first cgroup dir instead
// of a lock file, holds dir.
func dirLocked(dir string) bool {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) != nil
}
