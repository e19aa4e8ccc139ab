package run

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Errors of the cgroup layer, for errors.Is. Each run gets a cgroup under an "imgrun" parent in every
// hierarchy it needs; see newCgroup.
var (
	// ErrControllerMissing means a limit was asked for whose cgroup controller is not mounted (v1)
	// or cannot be enabled in cgroup.subtree_control (v2). The message names the controller.
	ErrControllerMissing = errors.New("cgroup controller not available")
	// ErrLimitRejected means a limit value is out of range (e.g. --memory below 6 MiB) or the
	// kernel refused it.
	ErrLimitRejected = errors.New("cgroup limit rejected")
	// ErrCgroupAccess means limits were asked for but this process may not create cgroups
	// (rootless without a delegated cgroup v2 subtree).
	ErrCgroupAccess = errors.New("no permission to create a cgroup")
)

// minMemoryBytes is the smallest --memory accepted, as docker does: below it even the run's init
// cannot start, and the kernel would silently round tiny values to a page or two.
const minMemoryBytes = 6 << 20

// cgroupParent is the directory, under each hierarchy's mount point, that holds one cgroup per run.
const cgroupParent = "imgrun"

// killTimeout bounds how long Kill waits for a frozen-and-killed cgroup to become empty.
const killTimeout = 5 * time.Second

// cgroup is the cgroup of one run. The launcher creates it with newCgroup before starting the run's
// init, moves the init in with Apply (or clones it in through fd() on v2), reads Stats after the run
// ends and always calls Close.
type cgroup interface {
	Apply(pid int) error   // move pid into the run's cgroup (every v1 hierarchy / the v2 dir)
	Kill() error           // freeze, SIGKILL every process in it, thaw, wait until it is empty (bounded)
	Stats() (Stats, error) // peak memory, CPU user/system/total, OOMKilled
	Close() error          // Kill if anything remains, then remove the cgroup dirs (all hierarchies)
}

// cgroupFD is implemented by cgroups that can take a child directly at clone time
// (SysProcAttr.UseCgroupFD, clone3 CLONE_INTO_CGROUP): fd returns the open cgroup v2 directory, or -1.
type cgroupFD interface {
	fd() int
}

// cgroupSelfJoin is implemented by cgroup v1 runs: the run's init can join the cgroup itself with
// joinCgroupSelf(cg.selfJoinFiles()) instead of the parent calling Apply. Files are absolute paths
// and must be written before the init leaves the host's mount tree (pivot_root).
type cgroupSelfJoin interface {
	selfJoinFiles() []string
}

// joinCgroupSelf moves the calling thread, and only it, into a run's cgroup: it writes "0" to
// each of files (cgroupSelfJoin). Moving a whole process (Apply) takes the kernel's
// cgroup_threadgroup_rwsem for writing, which waits for an RCU grace period: 5-15 ms measured on
// cgroup v1 here, on every cold start. A thread moving itself skips that lock (Linux 6.0+); on older
// kernels this still works, at Apply's cost. Measured: about 0.1 ms for four hierarchies.
//
// Only the run's init may call it, from the thread that later calls execve (runtime.LockOSThread
// held throughout): execve ends the other threads, so the command runs wholly inside the cgroup.
// Never call it in the launcher's own process (Kill then refuses to act, see errSelfInCgroup).
func joinCgroupSelf(files []string) error {
	for _, f := range files {
		if err := writeCgroupFile(filepath.Dir(f), filepath.Base(f), "0"); err != nil {
			return fmt.Errorf("cgroup: join: %w", err)
		}
	}
	return nil
}

// cgroupVersion forces "v1" or "v2" when set (tests); otherwise IMGRUN_CGROUP, otherwise detection.
var cgroupVersion string

// newCgroup creates the cgroup of run id under the imgrun parent, applying l. It picks cgroup v2
// when /sys/fs/cgroup is the unified hierarchy and v1 when v1 controllers are mounted (hybrid hosts
// keep their controllers on v1). Not root on cgroup v2, the run's cgroup goes below this process's
// own cgroup, which works when that was delegated to the user (ownership and cgroup.controllers
// decide). Not root, no delegation and no limits asked: a no-op cgroup (the run's PID namespace
// still ends every process). Not root with limits that cannot be applied: ErrCgroupAccess, or
// ErrControllerMissing when a needed controller is not delegated.
func newCgroup(id string, l Limits) (cgroup, error) {
	if id == "" || id == "." || id == ".." || strings.ContainsRune(id, '/') {
		return nil, fmt.Errorf("cgroup: bad run id %q", id)
	}
	if err := checkLimits(l); err != nil {
		return nil, err
	}
	mnts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	version, err := pickVersion(mnts)
	if err != nil {
		if l.isZero() {
			return noopCgroup{}, nil
		}
		return nil, err
	}
	var cg cgroup
	if version == "v2" {
		base, delegated := mnts.unified, false
		if os.Geteuid() != 0 {
			// Rootless: only a cgroup delegated to us (owned by our uid) can hold the run's.
			if base, err = ownCgroupV2(mnts.unified); err != nil {
				if l.isZero() {
					return noopCgroup{}, nil
				}
				return nil, err
			}
			delegated = true
		}
		cg, err = newCgroupV2(base, id, l, delegated)
	} else {
		cg, err = newCgroupV1(mnts, id, l)
	}
	if err != nil && errors.Is(err, os.ErrPermission) && os.Geteuid() != 0 {
		if l.isZero() {
			return noopCgroup{}, nil
		}
		return nil, fmt.Errorf("%w: rootless limits need root or a cgroup v2 delegated to this user "+
			"(systemd-run --user --scope -p Delegate=yes imgrun ...): %v", ErrCgroupAccess, err)
	}
	return cg, err
}

// pickVersion chooses the cgroup version from the forced setting or the mounts.
func pickVersion(m *mounts) (string, error) {
	v := cgroupVersion
	if v == "" {
		v = os.Getenv("IMGRUN_CGROUP")
	}
	switch v {
	case "v1":
		if len(m.v1) == 0 {
			return "", fmt.Errorf("%w: cgroup v1 forced but no v1 controller is mounted", ErrControllerMissing)
		}
		return "v1", nil
	case "v2":
		if m.unified == "" {
			return "", fmt.Errorf("%w: cgroup v2 forced but no cgroup2 file system is mounted", ErrControllerMissing)
		}
		return "v2", nil
	case "":
	default:
		return "", fmt.Errorf("cgroup: IMGRUN_CGROUP=%q: want v1 or v2", v)
	}
	if m.pureV2 {
		return "v2", nil
	}
	if len(m.v1) > 0 {
		return "v1", nil
	}
	if m.unified != "" {
		return "v2", nil
	}
	return "", fmt.Errorf("%w: no cgroup file system is mounted", ErrControllerMissing)
}

// checkLimits rejects values no kernel would take, before anything is created.
func checkLimits(l Limits) error {
	switch {
	case l.MemoryBytes < 0:
		return fmt.Errorf("%w: memory limit %d is negative", ErrLimitRejected, l.MemoryBytes)
	case l.MemoryBytes > 0 && l.MemoryBytes < minMemoryBytes:
		return fmt.Errorf("%w: memory limit %d bytes is below the minimum of 6 MiB", ErrLimitRejected, l.MemoryBytes)
	case l.CPUs < 0:
		return fmt.Errorf("%w: cpus %g is negative", ErrLimitRejected, l.CPUs)
	case l.CPUs > 0 && cpuQuota(l.CPUs) < 1000:
		return fmt.Errorf("%w: cpus %g is below the minimum of 0.01", ErrLimitRejected, l.CPUs)
	case l.CPUShares != 0 && (l.CPUShares < 2 || l.CPUShares > 262144):
		return fmt.Errorf("%w: cpu-shares %d is outside 2..262144", ErrLimitRejected, l.CPUShares)
	case l.PidsLimit < 0:
		return fmt.Errorf("%w: pids limit %d is negative", ErrLimitRejected, l.PidsLimit)
	}
	return nil
}

// errSelfInCgroup stops Kill from freezing and killing imgrun itself, which a thread of this
// process in the run's cgroup (joinCgroupSelf called in the wrong process) would make it do.
func errSelfInCgroup(id string) error {
	return fmt.Errorf("cgroup %s: this process is in the run's cgroup; refusing to freeze and kill it", id)
}

func (l Limits) isZero() bool {
	return l.MemoryBytes == 0 && l.CPUs == 0 && l.CPUShares == 0 && l.PidsLimit == 0 &&
		len(l.DeviceReadBps) == 0 && len(l.DeviceWriteBps) == 0
}

// cleanupStaleCgroups removes the empty run cgroups, and the lock files, of runs that crashed: every
// run whose lock file (cgroupLockDir) is missing or not locked. It looks only at the imgrun parents'
// direct children and the lock dir, and leaves non-empty cgroups (rmdir fails on them). Root looks
// under each hierarchy's root, a rootless caller under its own delegated cgroup v2, where their
// runs' cgroups are.
func cleanupStaleCgroups() error {
	mnts, err := cgroupMounts()
	if err != nil {
		return err
	}
	var parents []string
	if os.Geteuid() == 0 {
		for _, h := range mnts.v1 {
			parents = append(parents, h.dir+"/"+cgroupParent)
		}
		if mnts.unified != "" {
			parents = append(parents, mnts.unified+"/"+cgroupParent)
		}
	} else if mnts.unified != "" {
		if own, err := ownCgroupV2(mnts.unified); err == nil {
			parents = append(parents, own+"/"+cgroupParent)
		}
	}
	var errs []error
	runs := map[string][]string{} // run id → its cgroup dirs
	var ids []string              // in the order seen, so dirs[0] is the first hierarchy's
	add := func(id, dir string) {
		d, seen := runs[id]
		if !seen {
			ids = append(ids, id)
		}
		if dir != "" {
			d = append(d, dir)
		}
		runs[id] = d
	}
	for _, parent := range parents {
		ents, err := os.ReadDir(parent)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("cgroup cleanup: %w", err))
		}
		for _, e := range ents {
			if e.IsDir() {
				add(e.Name(), parent+"/"+e.Name())
			}
		}
	}
	lockDir := cgroupLockDir()
	// Lock files without cgroups: runs killed between lock and mkdir, or during Close.
	ents, err := os.ReadDir(lockDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("cgroup cleanup: %w", err))
	}
	for _, e := range ents {
		if e.Type().IsRegular() {
			add(e.Name(), "")
		}
	}
	for _, id := range ids {
		errs = append(errs, reapRun(lockDir, id, runs[id]))
	}
	return errors.Join(errs...)
}

// noopCgroup is the cgroup of a rootless run that asked for no limits: there is nothing to apply,
// and the run's PID namespace ends its processes when its init dies.
type noopCgroup struct{}

func (noopCgroup) Apply(int) error       { return nil }
func (noopCgroup) Kill() error           { return nil }
func (noopCgroup) Stats() (Stats, error) { return Stats{}, nil }
func (noopCgroup) Close() error          { return nil }
func (noopCgroup) fd() int               { return -1 }
