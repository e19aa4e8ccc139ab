package run

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The launcher re-executes its own binary (through the read-only view initExecutable returns)
// in the run's new namespaces, with initEnv set and inherited descriptors: the init reads its
// initConfig from specFd (the parent writes it only after the init is in the run's cgroup, so
// the pipe doubles as the start signal) and reports a setup failure as one JSON initError on
// errFd. errFd is closed once the command runs: the parent reading EOF on it means the command
// started. exeFd is the executable itself (only for the execve; the init closes it). Before it
// exits, the init writes on statusFd the signal that killed the command, if one did.
//
// By default the init stays PID 1 of the run, as docker run --init (tini) does: it forks the
// command, forwards signals to it, reaps every process the namespace hands it, and exits with
// the command's status (128+N when signal N killed it). With Spec.NoInit the command replaces
// the init as PID 1 (docker without --init): PID 1 then gets only the signals it handles, and
// reaping orphans is its job. Either way, when PID 1 exits the kernel kills everything else in
// the namespace.
const (
	initEnv  = "_IMGRUN_INIT"
	specFd   = 3
	errFd    = 4
	exeFd    = 5
	statusFd = 6
)

// initConfig is what the parent sends the init.
type initConfig struct {
	Spec   Spec   `json:"spec"`   // normalized, Hostname filled
	RunDir string `json:"runDir"` // where the init mounts the run's tmpfs (see rundir_linux.go)
	// KeepUpper and KeepWork are the overlay's upper and work dirs with KeepDir; otherwise
	// they are in the run's tmpfs.
	KeepUpper string `json:"keepUpper,omitempty"`
	KeepWork  string `json:"keepWork,omitempty"`
	Userns    bool   `json:"userns"` // a user namespace maps the caller to root
}

// MaybeInit must be the first call in main (and in TestMain of tests that run the launcher).
// In an ordinary process it returns at once. In the process Run starts as a run's init it
// sets up the container and runs the command (as its PID 1 init, or in its place with
// Spec.NoInit); it never returns.
func MaybeInit() {
	if os.Getenv(initEnv) != "1" || os.Getpid() != 1 {
		return
	}
	// prctl, capset, fork and execve act on the calling thread: keep them on one.
	runtime.LockOSThread()
	// Nothing in the run may read this process's memory or open /proc/1/exe (CVE-2019-5736):
	// a non-dumpable process's /proc files need CAP_SYS_PTRACE, which a run does not have.
	// Until here, the namespace holds no other process.
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	unix.Close(exeFd)
	// Executed as /proc/self/fd/5, the init would be named "5" in the run's ps.
	if fd, err := unix.Open("/proc/self/comm", unix.O_WRONLY|unix.O_CLOEXEC, 0); err == nil {
		unix.Write(fd, []byte("imgrun-init"))
		unix.Close(fd)
	}
	err := initMain()
	report := initError{Kind: "setup", Msg: "run init: " + err.Error()}
	var ke *kindError
	if errors.As(err, &ke) {
		report = initError{Kind: ke.kind, Msg: err.Error()}
	}
	b, _ := json.Marshal(report)
	unix.Write(errFd, b)
	os.Exit(1)
}

func initMain() error {
	f := os.NewFile(specFd, "spec")
	var c initConfig
	err := json.NewDecoder(io.LimitReader(f, 16<<20)).Decode(&c)
	f.Close()
	if err != nil {
		return fmt.Errorf("read spec: %w", err)
	}
	s := &c.Spec
	// The parent wrote the spec after moving us into the run's cgroup: make that cgroup the
	// root of what the run sees in /proc/self/cgroup.
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		return fmt.Errorf("new cgroup namespace: %w", err)
	}

	if err := makeMountsPrivate(s.Rootfs); err != nil {
		return err
	}
	rootPath, writable, err := mountRoot(&c)
	if err != nil {
		return err
	}
	root, err := os.OpenFile(rootPath, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := mountSystem(&c, root); err != nil {
		return err
	}
	if err := unix.Sethostname([]byte(s.Hostname)); err != nil {
		return fmt.Errorf("set hostname: %w", err)
	}
	if s.Network == NetworkNone {
		if err := loopbackUp(); err != nil {
			return err
		}
	}
	if err := enterRoot(root, s.NoPivot); err != nil {
		return err
	}
	root.Close()

	// From here on "/" is the run's root: plain paths resolve inside it.
	user, err := lookupUser(s.User)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil && writable {
		return fmt.Errorf("create working directory: %w", err)
	}
	if s.ReadOnly && writable {
		if err := unix.MountSetattr(unix.AT_FDCWD, "/", 0, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
			return &os.PathError{Op: "remount read-only", Path: "/", Err: err}
		}
	}
	if err := enterDir(s.Dir); err != nil {
		return err
	}
	env := commandEnv(s, user)
	argv0, err := lookPath(s.Args[0], envValue(env, "PATH"))
	if err != nil {
		return err
	}
	cred, err := credential(user, c.Userns)
	if err != nil {
		return err
	}
	if err := confineThread(s.NewPrivileges, s.Unconfined); err != nil {
		return err
	}
	// No descriptor of the launcher may reach the command (CVE-2024-21626); errFd closes on exec.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("close_range: %w", err)
	}
	if !s.NoInit {
		return superviseCommand(argv0, s.Args, env, cred, s.TTY)
	}
	if err := becomeUser(cred); err != nil {
		return err
	}
	err = unix.Exec(argv0, s.Args, env)
	return execError(s.Args[0], err)
}

// enterDir changes to dir and checks the result is inside the root (D3: a working directory
// reached through a leaked descriptor would make getcwd fail or return a relative path).
func enterDir(dir string) error {
	if err := unix.Chdir(dir); err != nil {
		return fmt.Errorf("working directory %s: %w", dir, err)
	}
	wd, err := unix.Getwd()
	if err != nil || !strings.HasPrefix(wd, "/") {
		return withKind("unsafe", fmt.Errorf("%w: working directory %s is outside the root", ErrUnsafeRootfs, dir))
	}
	return nil
}

// lookupUser resolves user in the image's /etc/passwd and /etc/group.
func lookupUser(user string) (execUser, error) {
	passwd, err := readUserFile("/etc/passwd")
	if err != nil {
		return execUser{}, withKind("user", err)
	}
	group, err := readUserFile("/etc/group")
	if err != nil {
		return execUser{}, withKind("user", err)
	}
	u, err := resolveUser(user, passwd, group)
	if err != nil {
		return execUser{}, withKind("user", err)
	}
	return u, nil
}

// readUserFile reads a regular file of at most maxUserFileBytes; a missing file is nil. It is
// opened non-blocking, so a FIFO cannot stall the launcher before fstat rejects it (C2).
func readUserFile(name string) ([]byte, error) {
	fd, err := unix.Open(name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &os.PathError{Op: "stat", Path: name, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%w: %s in the image is not a regular file", ErrUnknownUser, name)
	}
	if st.Size > maxUserFileBytes {
		return nil, fmt.Errorf("%w: %s in the image is larger than %d bytes", ErrUnknownUser, name, maxUserFileBytes)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxUserFileBytes+1))
	if err == nil && len(b) > maxUserFileBytes {
		err = fmt.Errorf("%w: %s in the image is larger than %d bytes", ErrUnknownUser, name, maxUserFileBytes)
	}
	return b, err
}

// commandEnv completes the command's environment as docker does: HOSTNAME, HOME and, with a
// terminal, TERM, each only when not set.
func commandEnv(s *Spec, u execUser) []string {
	env := append([]string{}, s.Env...)
	add := func(k, v string) {
		for _, kv := range env {
			if strings.HasPrefix(kv, k+"=") {
				return
			}
		}
		env = append(env, k+"="+v)
	}
	add("PATH", DefaultPath)
	add("HOSTNAME", s.Hostname)
	if s.TTY {
		add("TERM", "xterm")
	}
	add("HOME", u.Home)
	return env
}

func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], key+"="); ok {
			return v
		}
	}
	return ""
}

// execError maps a failed execve to docker's exit codes: 127 when the file (or its interpreter)
// does not exist, 126 when it cannot be executed.
func execError(name string, err error) error {
	msg := fmt.Sprintf("exec %s: %v", name, err)
	switch {
	case errors.Is(err, syscall.ENOENT):
		return withKind("notfound", errors.New(msg))
	default:
		return withKind("notexec", errors.New(msg))
	}
}
