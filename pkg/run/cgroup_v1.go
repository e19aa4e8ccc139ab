package run

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupV1 is a run's cgroup on cgroup v1: one directory <mount>/imgrun/<id> per hierarchy.
// Only host-side writes are made; the run never sees a writable cgroup v1 mount (THREATS.md D7:
// release_agent escapes need one).
type cgroupV1 struct {
	id     string
	dirs   []string          // one per hierarchy
	byCtrl map[string]string // controller → its run dir
	lock   *runLock          // held from before the first mkdir until Close removed the dirs
	closed bool
}

func newCgroupV1(m *mounts, id string, l Limits) (_ cgroup, err error) {
	settings := v1Settings(l)
	for _, c := range controllersOf(settings) {
		if !v1Has(m, c) {
			return nil, fmt.Errorf("%w: %q is not mounted (cgroup v1)", ErrControllerMissing, c)
		}
	}
	lock, err := lockRun(id)
	if err != nil {
		return nil, err
	}
	cg := &cgroupV1{id: id, byCtrl: map[string]string{}, lock: lock}
	defer func() {
		if err != nil {
			cg.Close()
		}
	}()
	for _, h := range m.v1 {
		if !v1Wanted(h, settings) {
			continue
		}
		dir, err := mkdirCgroup(h.dir+"/"+cgroupParent, id)
		if err != nil {
			return nil, fmt.Errorf("cgroup: %w", err)
		}
		cg.dirs = append(cg.dirs, dir)
		for _, c := range h.controllers {
			cg.byCtrl[c] = dir
		}
	}
	if dir, ok := cg.byCtrl["devices"]; ok {
		if err := writeV1Devices(dir); err != nil {
			return nil, fmt.Errorf("cgroup: device rules: %w", err)
		}
	}
	for _, s := range settings {
		err := writeCgroupFile(cg.byCtrl[s.ctrl], s.file, s.val)
		if err != nil && s.optional && errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrLimitRejected, err)
		}
	}
	return cg, nil
}

// v1AlwaysUsed are the hierarchies every run joins: freezer for Kill, devices for the device
// rules, memory and cpuacct for Stats. pids, cpu and blkio are joined only when limited, which
// keeps a run without limits to four mkdirs, four Apply writes and four rmdirs.
var v1AlwaysUsed = []string{"freezer", "devices", "memory", "cpuacct"}

func v1Wanted(h hierarchy, settings []setting) bool {
	for _, c := range h.controllers {
		if slices.Contains(v1AlwaysUsed, c) || slices.ContainsFunc(settings, func(s setting) bool { return s.ctrl == c }) {
			return true
		}
	}
	return false
}

func v1Has(m *mounts, c string) bool {
	for _, h := range m.v1 {
		if h.has(c) {
			return true
		}
	}
	return false
}

// writeV1Devices denies every device, then allows the run's /dev nodes, through one open file per
// control file (each write is one rule).
func writeV1Devices(dir string) error {
	var fd int
	var open string
	defer func() {
		if open != "" {
			unix.Close(fd)
		}
	}()
	for _, r := range v1DeviceRules() {
		if r.file != open {
			if open != "" {
				unix.Close(fd)
				open = ""
			}
			var err error
			if fd, err = unix.Open(dir+"/"+r.file, unix.O_WRONLY|unix.O_CLOEXEC, 0); err != nil {
				return &os.PathError{Op: "open", Path: dir + "/" + r.file, Err: err}
			}
			open = r.file
		}
		if _, err := unix.Write(fd, []byte(r.val)); err != nil {
			return fmt.Errorf("write %q to %s/%s: %w", r.val, dir, r.file, err)
		}
	}
	return nil
}

// Apply moves pid into the run's cgroup in every hierarchy.
func (cg *cgroupV1) Apply(pid int) error {
	p := strconv.Itoa(pid)
	for _, d := range cg.dirs {
		if err := writeCgroupFile(d, "cgroup.procs", p); err != nil {
			return fmt.Errorf("cgroup: add pid %d: %w", pid, err)
		}
	}
	return nil
}

// pids lists the processes in any of the run's hierarchies.
func (cg *cgroupV1) pids() ([]int, error) {
	var all []int
	for _, d := range cg.dirs {
		p, err := readPids(d)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("cgroup: %w", err)
		}
		all = append(all, p...)
	}
	return all, nil
}

// Kill freezes the cgroup so nothing can fork, SIGKILLs every process, thaws it so the signals
// are delivered, and waits (bounded) until it is empty. Without a freezer it kills until empty.
func (cg *cgroupV1) Kill() error {
	pids, err := cg.pids()
	if err != nil || len(pids) == 0 { // the usual case: the run's processes are gone already
		return err
	}
	if slices.Contains(pids, os.Getpid()) {
		return errSelfInCgroup(cg.id)
	}
	freezer := cg.byCtrl["freezer"]
	if freezer != "" {
		if err := freezeV1(freezer, "FROZEN"); err != nil {
			return err
		}
	}
	killed := false
	err = waitEmpty(cg.id, func() (bool, error) {
		pids, err := cg.pids()
		if err != nil || len(pids) == 0 {
			return err == nil, err
		}
		if !killed || freezer == "" { // frozen: one pass is enough; killed tasks only need time
			for _, p := range pids {
				_ = unix.Kill(p, unix.SIGKILL) // ESRCH: already gone
			}
			killed = true
			if freezer != "" {
				if err := freezeV1(freezer, "THAWED"); err != nil {
					return false, err
				}
			}
		}
		return false, nil
	})
	if freezer != "" && !killed {
		return errors.Join(err, freezeV1(freezer, "THAWED"))
	}
	return err
}

// freezeV1 sets freezer.state and waits (bounded) until the kernel reports it, since FROZEN
// passes through FREEZING while tasks are stopped one by one.
func freezeV1(dir, state string) error {
	if err := writeCgroupFile(dir, "freezer.state", state); err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	deadline := time.Now().Add(time.Second)
	for delay := 20 * time.Microsecond; ; delay = min(2*delay, 10*time.Millisecond) {
		b, err := readCgroupFile(dir, "freezer.state")
		if err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
		if string(bytes.TrimSpace(b)) == state {
			return nil
		}
		if time.Now().After(deadline) {
			// A task stuck in the kernel cannot be frozen; SIGKILL still reaches it.
			return nil
		}
		time.Sleep(delay)
	}
}

// Stats reads peak memory, CPU time and whether the OOM killer fired.
func (cg *cgroupV1) Stats() (Stats, error) {
	var st Stats
	var errs []error
	if d := cg.byCtrl["memory"]; d != "" {
		n, err := readUint(d, "memory.max_usage_in_bytes")
		errs = append(errs, err)
		st.MemoryPeakBytes = n
		oc, err := readCgroupFile(d, "memory.oom_control")
		errs = append(errs, err)
		if n, ok := keyedUint(oc, "oom_kill"); ok {
			st.OOMKilled = n > 0
		} else if n, ok := keyedUint(oc, "under_oom"); ok {
			st.OOMKilled = n > 0
		}
	}
	if d := cg.byCtrl["cpuacct"]; d != "" {
		n, err := readUint(d, "cpuacct.usage")
		errs = append(errs, err)
		st.CPUTotalNanos = n
		u, uerr := readUint(d, "cpuacct.usage_user")
		s, serr := readUint(d, "cpuacct.usage_sys")
		if uerr == nil && serr == nil {
			st.CPUUserNanos, st.CPUSystemNanos = u, s
		} else {
			// Older kernels: cpuacct.stat in USER_HZ ticks, which is 100 on every Linux ABI.
			b, err := readCgroupFile(d, "cpuacct.stat")
			errs = append(errs, err)
			u, _ := keyedUint(b, "user")
			s, _ := keyedUint(b, "system")
			st.CPUUserNanos, st.CPUSystemNanos = u*1e7, s*1e7
		}
	}
	if err := errors.Join(errs...); err != nil {
		return st, fmt.Errorf("cgroup stats: %w", err)
	}
	return st, nil
}

// Close kills what is left, removes the run's directory in every hierarchy, then its lock file.
func (cg *cgroupV1) Close() error {
	if cg.closed {
		return nil
	}
	cg.closed = true
	var errs []error
	busy := false
	for _, d := range cg.dirs { // warm path: every dir is already empty and goes in one rmdir
		switch err := unix.Rmdir(d); err {
		case nil, unix.ENOENT:
		case unix.EBUSY:
			busy = true
		default:
			errs = append(errs, &os.PathError{Op: "rmdir", Path: d, Err: err})
		}
	}
	if busy {
		errs = append(errs, cg.Kill())
		for _, d := range cg.dirs {
			errs = append(errs, rmdirCgroup(d))
		}
	}
	cg.lock.release()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cgroup close: %w", err)
	}
	return nil
}

func (cg *cgroupV1) fd() int { return -1 }

// selfJoinFiles are the "tasks" files of the run's hierarchies, for joinCgroupSelf.
func (cg *cgroupV1) selfJoinFiles() []string {
	files := make([]string, len(cg.dirs))
	for i, d := range cg.dirs {
		files[i] = d + "/tasks"
	}
	return files
}
