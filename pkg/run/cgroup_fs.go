package run

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// hierarchy is one mounted cgroup v1 hierarchy and the controllers bound to it.
type hierarchy struct {
	dir         string   // mount point, e.g. /sys/fs/cgroup/memory
	controllers []string // e.g. ["cpu", "cpuacct"] when co-mounted
}

func (h hierarchy) has(c string) bool {
	for _, x := range h.controllers {
		if x == c {
			return true
		}
	}
	return false
}

// mounts is what /proc/self/mountinfo says about cgroups.
type mounts struct {
	v1      []hierarchy // hierarchies imgrun uses, in v1Controllers order, one entry per mount
	unified string      // a cgroup2 mount point ("" if none)
	pureV2  bool        // /sys/fs/cgroup itself is cgroup2
}

// v1Controllers are the v1 controllers a run uses, in the order of its dirs.
// cpuset is left out on purpose: a new cpuset cgroup is unusable until cpus and mems are copied in.
var v1Controllers = []string{"freezer", "devices", "memory", "pids", "cpu", "cpuacct", "blkio"}

var (
	mountsOnce   sync.Once
	mountsCached *mounts
	mountsErr    error
)

// cgroupMounts reads /proc/self/mountinfo once per process: mount points do not move under a
// running imgrun, and this keeps the warm path to one read.
func cgroupMounts() (*mounts, error) {
	mountsOnce.Do(func() {
		mountsCached, mountsErr = readCgroupMounts()
	})
	return mountsCached, mountsErr
}

func readCgroupMounts() (*mounts, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	defer f.Close()
	m, err := parseMountinfo(f)
	if err != nil {
		return nil, fmt.Errorf("cgroup: /proc/self/mountinfo: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		m.pureV2 = true
		m.unified = "/sys/fs/cgroup"
	}
	return m, nil
}

// parseMountinfo picks the cgroup and cgroup2 mounts out of a mountinfo stream (proc(5)):
// "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS".
func parseMountinfo(r io.Reader) (*mounts, error) {
	m := &mounts{}
	byDir := map[string]bool{}
	found := map[string]hierarchy{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		pf := strings.Fields(pre)
		qf := strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 {
			continue
		}
		dir := unescapeMount(pf[4])
		switch qf[0] {
		case "cgroup2":
			if m.unified == "" {
				m.unified = dir
			}
		case "cgroup":
			var ctrls []string
			for _, o := range strings.Split(qf[2], ",") {
				for _, c := range v1Controllers {
					if o == c {
						ctrls = append(ctrls, c)
					}
				}
			}
			for _, c := range ctrls {
				if _, dup := found[c]; !dup {
					found[c] = hierarchy{dir: dir, controllers: ctrls}
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, c := range v1Controllers {
		h, ok := found[c]
		if ok && !byDir[h.dir] {
			byDir[h.dir] = true
			m.v1 = append(m.v1, h)
		}
	}
	return m, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for space and so on).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// writeCgroupFile writes one value to a cgroup control file (one write: the kernel parses each
// write on its own). O_TRUNC is meaningless for cgroupfs and left out.
func writeCgroupFile(dir, name, val string) error {
	p := dir + "/" + name
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: p, Err: err}
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(val)); err != nil {
		return fmt.Errorf("write %q to %s: %w", val, p, err)
	}
	return nil
}

// readCgroupFile reads a small cgroup control file.
func readCgroupFile(dir, name string) ([]byte, error) {
	return os.ReadFile(dir + "/" + name)
}

// readUint reads a file holding one unsigned number; "max" reads as 0.
func readUint(dir, name string) (uint64, error) {
	b, err := readCgroupFile(dir, name)
	if err != nil {
		return 0, err
	}
	s := string(bytes.TrimSpace(b))
	if s == "max" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s/%s: %w", dir, name, err)
	}
	return n, nil
}

// keyedUint finds "key N" in a flat-keyed cgroup file (memory.events, cpu.stat, cpuacct.stat).
func keyedUint(b []byte, key string) (uint64, bool) {
	for _, line := range bytes.Split(b, []byte("\n")) {
		k, v, ok := bytes.Cut(line, []byte(" "))
		if ok && string(k) == key {
			n, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// readPids lists the processes in a cgroup (cgroup.procs).
func readPids(dir string) ([]int, error) {
	b, err := readCgroupFile(dir, "cgroup.procs")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range bytes.Fields(b) {
		if n, err := strconv.Atoi(string(f)); err == nil {
			pids = append(pids, n)
		}
	}
	return pids, nil
}

// mkdirCgroup creates dir/id, creating dir (the imgrun parent) first only when it is missing, so the
// warm path costs one mkdir.
func mkdirCgroup(parent, id string) (string, error) {
	dir := parent + "/" + id
	err := unix.Mkdir(dir, 0o755)
	if err == unix.ENOENT {
		if err = unix.Mkdir(parent, 0o755); err == nil || err == unix.EEXIST {
			err = unix.Mkdir(dir, 0o755)
		}
	}
	if err != nil {
		return "", &os.PathError{Op: "mkdir", Path: dir, Err: err}
	}
	return dir, nil
}

// openCgroup opens the cgroup directory dir (cgroup v2 keeps it open: clone3's
// CLONE_INTO_CGROUP and the device filter need the fd).
func openCgroup(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return fd, nil
}

// rmdirCgroup removes a cgroup directory. Right after its last process exits the kernel may still
// report it busy for a moment, so EBUSY is retried for a bounded time.
func rmdirCgroup(dir string) error {
	deadline := time.Now().Add(time.Second)
	for delay := 100 * time.Microsecond; ; delay = min(2*delay, 20*time.Millisecond) {
		err := unix.Rmdir(dir)
		if err == nil || err == unix.ENOENT {
			return nil
		}
		if err != unix.EBUSY || time.Now().After(deadline) {
			return &os.PathError{Op: "rmdir", Path: dir, Err: err}
		}
		time.Sleep(delay)
	}
}

// waitEmpty polls until empty reports true or killTimeout passes.
func waitEmpty(what string, empty func() (bool, error)) error {
	deadline := time.Now().Add(killTimeout)
	for delay := 50 * time.Microsecond; ; delay = min(2*delay, 10*time.Millisecond) {
		ok, err := empty()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: processes remain %v after SIGKILL", what, killTimeout)
		}
		time.Sleep(delay)
	}
}
