package run

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupV2 is a run's cgroup on the unified hierarchy: one directory <mount>/imgrun/<id>, kept open
// for the life of the run (the device filter's attach point, and the fd for clone3
// CLONE_INTO_CGROUP).
type cgroupV2 struct {
	id     string
	dir    string
	dirFD  int
	lock   *runLock // held from before the mkdir until Close removed the dir
	closed bool
}

// v2Controllers are enabled on the imgrun parent so each run's cgroup can have them.
const v2Controllers = "+memory +pids +cpu +io"

// noCgroupKill records that cgroup.kill is missing (kernels before 5.14), so later Kills go
// straight to freeze-and-kill.
var noCgroupKill atomic.Bool

// newCgroupV2 creates base/imgrun/id. base is the mount root, or for a rootless caller its own
// (delegated) cgroup.
func newCgroupV2(base, id string, l Limits, delegated bool) (_ cgroup, err error) {
	parent := base + "/" + cgroupParent
	settings := v2Settings(l)
	lock, err := lockRun(id)
	if err != nil {
		return nil, err
	}
	dir, err := mkdirCgroup(parent, id)
	if err != nil {
		lock.release()
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	cg := &cgroupV2{id: id, dir: dir, dirFD: -1, lock: lock}
	defer func() {
		if err != nil {
			cg.Close()
		}
	}()
	if err := enableV2Controllers(base, parent, controllersOf(settings), delegated); err != nil {
		return nil, err
	}
	if cg.dirFD, err = openCgroup(dir); err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	if err := attachDeviceFilter(cg.dirFD); err != nil {
		// Without privilege over BPF (rootless) the filter cannot be loaded; the run's /dev is
		// then a user-namespace mount, which the kernel already treats as nodev.
		if !(errors.Is(err, os.ErrPermission) && os.Geteuid() != 0) {
			return nil, fmt.Errorf("cgroup: device filter: %w", err)
		}
	}
	for _, s := range settings {
		err := writeCgroupFile(dir, s.file, s.val)
		switch {
		case err == nil:
		case errors.Is(err, os.ErrNotExist) && s.optional:
		case errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("%w: %q is not enabled for %s (cgroup v2)", ErrControllerMissing, s.ctrl, dir)
		default:
			return nil, fmt.Errorf("%w: %w", ErrLimitRejected, err)
		}
	}
	return cg, nil
}

// enableV2Controllers turns on memory, pids, cpu and io for the run cgroups under parent, in one
// write on the warm path. Controllers no limit needs may be missing (then only --stats loses
// memory.peak); a needed one that is not available in base (the mount root, or the caller's
// delegated cgroup when rootless) is ErrControllerMissing naming it.
func enableV2Controllers(base, parent string, need []string, delegated bool) error {
	if writeCgroupFile(parent, "cgroup.subtree_control", v2Controllers) == nil || len(need) == 0 {
		return nil
	}
	want := "+" + strings.Join(need, " +")
	if writeCgroupFile(parent, "cgroup.subtree_control", want) == nil {
		return nil
	}
	// The parent can only offer what base enables for its children.
	avail, _ := readCgroupFile(base, "cgroup.controllers")
	for _, c := range need {
		if !slices.Contains(strings.Fields(string(avail)), c) {
			return fmt.Errorf("%w: %q is not available in %s (cgroup v2: bound to cgroup v1, or not delegated)",
				ErrControllerMissing, c, base)
		}
	}
	err := writeCgroupFile(base, "cgroup.subtree_control", want)
	if errors.Is(err, unix.EBUSY) && delegated {
		// cgroup v2 enables controllers only below a cgroup with no processes of its own. Leave
		// base for a leaf, as crun does; this works when imgrun is the only process in its
		// delegated cgroup (systemd-run --user --scope -p Delegate=yes imgrun ...).
		if err = moveSelf(base + "/" + launcherLeaf); err == nil {
			err = writeCgroupFile(base, "cgroup.subtree_control", want)
		}
	}
	if err == nil {
		err = writeCgroupFile(parent, "cgroup.subtree_control", want)
	}
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("%w: cannot enable %s below %s: other processes are in it (cgroup v2 forbids controllers there): %w",
			ErrControllerMissing, want, base, err)
	}
	if err != nil {
		return fmt.Errorf("%w: enable %s for %s: %w", ErrControllerMissing, want, parent, err)
	}
	return nil
}

// launcherLeaf is the cgroup a rootless imgrun moves itself into so that its delegated cgroup
// can enable controllers for the runs.
const launcherLeaf = "imgrun-launcher"

// moveSelf moves this process into the cgroup dir, creating it.
func moveSelf(dir string) error {
	if err := unix.Mkdir(dir, 0o755); err != nil && err != unix.EEXIST {
		return &os.PathError{Op: "mkdir", Path: dir, Err: err}
	}
	return writeCgroupFile(dir, "cgroup.procs", strconv.Itoa(os.Getpid()))
}

// ownCgroupV2 is the directory of this process's cgroup v2, from /proc/self/cgroup ("0::/path").
// A rootless imgrun can only create cgroups there, and only when it was delegated.
func ownCgroupV2(mount string) (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("cgroup: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return strings.TrimSuffix(mount+p, "/"), nil
		}
	}
	return "", fmt.Errorf("%w: this process is in no cgroup v2", ErrCgroupAccess)
}

// Apply moves pid into the run's cgroup.
func (cg *cgroupV2) Apply(pid int) error {
	if err := writeCgroupFile(cg.dir, "cgroup.procs", strconv.Itoa(pid)); err != nil {
		return fmt.Errorf("cgroup: add pid %d: %w", pid, err)
	}
	return nil
}

// populated reads "populated" from cgroup.events: whether any process is in the cgroup or below.
func (cg *cgroupV2) populated() (bool, error) {
	b, err := readCgroupFile(cg.dir, "cgroup.events")
	if err != nil {
		return false, fmt.Errorf("cgroup: %w", err)
	}
	n, _ := keyedUint(b, "populated")
	return n != 0, nil
}

// Kill ends every process in the cgroup: cgroup.kill where the kernel has it (atomic, forks
// included), otherwise freeze, SIGKILL each, thaw. It then waits (bounded) until it is empty.
func (cg *cgroupV2) Kill() error {
	empty := func() (bool, error) {
		p, err := cg.populated()
		return !p, err
	}
	if done, err := empty(); done || err != nil { // the usual case: the run is gone already
		return err
	}
	if pids, err := readPids(cg.dir); err == nil && slices.Contains(pids, os.Getpid()) {
		return errSelfInCgroup(cg.id)
	}
	if !noCgroupKill.Load() {
		err := writeCgroupFile(cg.dir, "cgroup.kill", "1")
		if err == nil {
			return waitEmpty(cg.id, empty)
		}
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cgroup: %w", err)
		}
		noCgroupKill.Store(true)
	}
	return cg.freezeKill(empty)
}

// freezeKill is Kill for kernels without cgroup.kill (before 5.14; cgroup.freeze needs 5.2).
func (cg *cgroupV2) freezeKill(empty func() (bool, error)) error {
	if err := cg.freeze(true); err != nil {
		return err
	}
	pids, err := readPids(cg.dir)
	if err != nil {
		return errors.Join(fmt.Errorf("cgroup: %w", err), cg.freeze(false))
	}
	for _, p := range pids {
		_ = unix.Kill(p, unix.SIGKILL) // ESRCH: already gone
	}
	if err := cg.freeze(false); err != nil {
		return err
	}
	return waitEmpty(cg.id, func() (bool, error) {
		pids, err := readPids(cg.dir)
		for _, p := range pids { // a task that was mid-fork when frozen
			_ = unix.Kill(p, unix.SIGKILL)
		}
		if err != nil {
			return false, fmt.Errorf("cgroup: %w", err)
		}
		return empty()
	})
}

// freeze sets cgroup.freeze and waits (bounded) for cgroup.events to say "frozen" when freezing.
func (cg *cgroupV2) freeze(on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	if err := writeCgroupFile(cg.dir, "cgroup.freeze", v); err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	if !on {
		return nil
	}
	deadline := time.Now().Add(time.Second)
	for delay := 20 * time.Microsecond; time.Now().Before(deadline); delay = min(2*delay, 10*time.Millisecond) {
		b, err := readCgroupFile(cg.dir, "cgroup.events")
		if err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
		if n, _ := keyedUint(b, "frozen"); n == 1 {
			return nil
		}
		time.Sleep(delay)
	}
	return nil // a task stuck in the kernel does not freeze; SIGKILL still reaches it
}

// Stats reads peak memory (memory.peak, else memory.current), CPU time from cpu.stat (always
// present on v2) and the OOM kill count from memory.events.
func (cg *cgroupV2) Stats() (Stats, error) {
	var st Stats
	if n, err := readUint(cg.dir, "memory.peak"); err == nil {
		st.MemoryPeakBytes = n
	} else if n, err := readUint(cg.dir, "memory.current"); err == nil {
		st.MemoryPeakBytes = n
	}
	if b, err := readCgroupFile(cg.dir, "memory.events"); err == nil {
		n, _ := keyedUint(b, "oom_kill")
		st.OOMKilled = n > 0
	}
	b, err := readCgroupFile(cg.dir, "cpu.stat")
	if err != nil {
		return st, fmt.Errorf("cgroup stats: %w", err)
	}
	u, _ := keyedUint(b, "user_usec")
	s, _ := keyedUint(b, "system_usec")
	t, _ := keyedUint(b, "usage_usec")
	st.CPUUserNanos, st.CPUSystemNanos, st.CPUTotalNanos = u*1000, s*1000, t*1000
	return st, nil
}

// Close kills what is left and removes the run's cgroup (which also detaches the device filter),
// then its lock file.
func (cg *cgroupV2) Close() error {
	if cg.closed {
		return nil
	}
	cg.closed = true
	var errs []error
	switch err := unix.Rmdir(cg.dir); err {
	case nil, unix.ENOENT:
	case unix.EBUSY:
		errs = append(errs, cg.Kill(), rmdirCgroup(cg.dir))
	default:
		errs = append(errs, &os.PathError{Op: "rmdir", Path: cg.dir, Err: err})
	}
	if cg.dirFD >= 0 {
		unix.Close(cg.dirFD)
		cg.dirFD = -1
	}
	cg.lock.release()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cgroup close: %w", err)
	}
	return nil
}

// fd is the open cgroup directory, for SysProcAttr{UseCgroupFD: true, CgroupFD: fd}.
func (cg *cgroupV2) fd() int { return cg.dirFD }
