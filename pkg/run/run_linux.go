package run

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// forwardedSignals are relayed to the run's PID 1, as docker's --sig-proxy does. The kernel
// delivers them only when PID 1 handles them, exactly as in a docker container.
var forwardedSignals = []os.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT,
	unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH}

// Run runs spec.Args in a new container made of spec.Rootfs and waits for it to end. A non-zero
// exit is an *ExitError; every other error means the run could not be set up. Everything the
// run made (processes, writable layer, cgroup) is gone when Run returns, except KeepDir.
//
// While Run runs, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH sent to this
// process are forwarded to the command instead of acting on the caller. Cancelling ctx stops
// the run like `docker stop`: SIGTERM, then SIGKILL after spec.StopTimeout. (So a caller that
// wants docker's Ctrl-C behaviour must not cancel ctx on SIGINT itself.)
//
// The calling program must call MaybeInit first thing in main.
func Run(ctx context.Context, spec Spec, stdio Stdio) error {
	_, err := RunStats(ctx, spec, stdio)
	return err
}

// RunStats is Run that also returns the run's resource usage, read from its cgroup when it
// ended: nil unless spec.Stats or spec.Limits asked for a cgroup (and one could be made).
func RunStats(ctx context.Context, spec Spec, stdio Stdio) (*Stats, error) {
	if _, err := checkSpec(spec); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st, err := Start(spec, stdio)
	if err != nil {
		return nil, err
	}
	return st.Run(ctx, spec)
}

// checkSpec normalizes spec and checks that its rootfs is a directory.
func checkSpec(spec Spec) (Spec, error) {
	s, err := spec.normalize()
	if err != nil {
		return s, err
	}
	if fi, err := os.Stat(s.Rootfs); err != nil || !fi.IsDir() {
		return s, fmt.Errorf("%w: rootfs %s is not a directory", ErrBadSpec, s.Rootfs)
	}
	return s, nil
}

// Started is a run whose init is starting, or waiting to be told what to run. Start begins a
// run before its Spec is complete, so that starting the init (a new process in new namespaces
// that executes this program again: 3-5 ms, most of it creating the namespaces and the Go
// runtime starting up) overlaps what the caller still has to do, typically finding the image
// and its root file system. Until Run sends it the Spec, the init only waits; it changes
// nothing. Exactly one of Run and Abort must be called.
type Started struct {
	ls     Spec          // launchSpec of the Spec given to Start
	id     string        // the run's id: its cgroup's name and its default host name
	userns bool          // the init is in a new user namespace (a rootless caller)
	ready  chan struct{} // closed when the init has started (l), or failed to (err)
	l      *launch
	err    error
	// cleaned is closed when cleanupStaleCgroups, run alongside for a run with a cgroup, is
	// done; Run and Abort wait for it.
	cleaned chan struct{}
	used    bool
}

// launchSpec is what Start uses of a Spec: what decides how the init is started (its
// namespaces, its stdio and its cgroup). Run refuses a Spec that differs in these fields.
func launchSpec(spec Spec) (Spec, error) {
	ls := Spec{Network: spec.Network, TTY: spec.TTY, Stdin: spec.Stdin, Limits: spec.Limits, Stats: spec.Stats}
	switch ls.Network {
	case "":
		ls.Network = NetworkNone
	case NetworkNone, NetworkHost:
	default:
		return ls, fmt.Errorf("%w: network %q: want none or host", ErrBadSpec, spec.Network)
	}
	return ls, nil
}

// sameLaunch reports whether a and b (launchSpec results) start the init the same way.
func sameLaunch(a, b Spec) bool {
	return a.Network == b.Network && a.TTY == b.TTY && a.Stdin == b.Stdin && a.Stats == b.Stats &&
		a.Limits.equal(b.Limits)
}

// Start starts the init of a run in its namespaces (and its cgroup, for Limits or Stats) in
// the background and returns at once; Run waits for it and reports a failure to start. Only
// spec's Network, TTY, Stdin, Limits and Stats are used; the rest of the Spec is given to
// Run. Start itself fails only for a bad network or limit. The calling program must call
// MaybeInit first thing in main.
func Start(spec Spec, stdio Stdio) (*Started, error) {
	ls, err := launchSpec(spec)
	if err != nil {
		return nil, err
	}
	if err := checkLimits(ls.Limits); err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	st := &Started{ls: ls, id: newRunID(), userns: os.Geteuid() != 0,
		ready: make(chan struct{}), cleaned: make(chan struct{})}
	// Creating the namespaces and executing the init block the calling thread for 1-2 ms
	// (starting a process waits for its execve); meanwhile the caller goes on.
	go func() {
		defer close(st.ready)
		st.l, st.err = startLaunch(st.id, ls, st.userns, stdio)
	}()
	if ls.Limits.isZero() && !ls.Stats {
		close(st.cleaned)
	} else {
		// What killed runs left (0.5 ms of directory reads and rmdirs here): best effort,
		// off the run's path. It never touches a live run's cgroup (see cgroup_lock.go).
		go func() {
			defer close(st.cleaned)
			cleanupStaleCgroups()
		}()
	}
	return st, nil
}

// startLaunch makes the run's cgroup and starts its init.
func startLaunch(id string, ls Spec, rootless bool, stdio Stdio) (*launch, error) {
	cg, err := runCgroup(id, ls, rootless, stdio.Stderr)
	if err != nil {
		return nil, err
	}
	l := &launch{spec: ls, cg: cg, stdio: stdio, userns: rootless}
	if err := l.start(); err != nil {
		if cerr := cg.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("remove cgroup: %w", cerr))
		}
		return nil, err
	}
	return l, nil
}

// runCgroup makes the run's cgroup when its Spec asks for limits or stats. A cgroup costs a v1
// migration (an RCU grace period, ~5-10 ms) on every start; without limits or stats it would
// only kill stragglers, which the PID namespace already does. A rootless caller that may not
// make one runs without, with a warning.
func runCgroup(id string, ls Spec, rootless bool, stderr io.Writer) (cgroup, error) {
	if ls.Limits.isZero() && !ls.Stats {
		return noopCgroup{}, nil
	}
	cg, err := newCgroup(id, ls.Limits)
	if err == nil {
		return cg, nil
	}
	if !rootless || !errors.Is(err, ErrCgroupAccess) {
		return nil, fmt.Errorf("run: %w", err)
	}
	warn(stderr, "resource limits are not applied: %v", err)
	return noopCgroup{}, nil
}

// Abort ends a started run that will not be Run: it kills the init, which has not run
// anything yet, and removes the run's cgroup.
func (st *Started) Abort() error {
	if st.used {
		return nil
	}
	st.used = true
	defer func() { <-st.cleaned }()
	if <-st.ready; st.err != nil {
		return nil // nothing was left running
	}
	st.l.abort()
	return closeCgroup(st.l.cg)
}

// Run runs spec in the started run, like the package's Run. spec's Network, TTY, Stdin, Limits
// and Stats must be those given to Start.
func (st *Started) Run(ctx context.Context, spec Spec) (_ *Stats, err error) {
	if st.used {
		return nil, errors.New("run: Started.Run called after Run or Abort")
	}
	st.used = true
	defer func() { <-st.cleaned }()
	s, rd, msg, perr := st.prepare(ctx, spec) // while the init may still be starting
	if rd != nil {
		defer func() { err = errors.Join(err, rd.remove()) }() // once the init is gone
	}
	if <-st.ready; st.err != nil {
		if perr != nil {
			return nil, perr // a bad Spec, whether or not the init could start
		}
		return nil, st.err
	}
	l := st.l
	defer func() { err = errors.Join(err, closeCgroup(l.cg)) }()
	if perr != nil {
		l.abort()
		return nil, perr
	}
	code, sig, err := l.finish(ctx, s, msg)
	if err != nil {
		return nil, err
	}
	cg := l.cg
	cg.Kill() // nothing of the run may outlive its PID 1; the PID namespace already ensures it
	var stats *Stats
	if _, noop := cg.(noopCgroup); !noop {
		if st, err := cg.Stats(); err == nil {
			stats = &st
		}
	}
	if code == 0 {
		return stats, nil
	}
	ee := &ExitError{Code: code, Signal: sig}
	if stats != nil && stats.OOMKilled {
		ee.OOMKilled = true
		if code == 128+int(unix.SIGKILL) {
			ee.Err = ErrOOMKilled
		}
	}
	return stats, ee
}

// prepare checks spec (also against the Spec given to Start), makes the run's directories
// and encodes the init's config. None of it needs the init, so Run does it while the init
// may still be starting.
func (st *Started) prepare(ctx context.Context, spec Spec) (Spec, *runDir, []byte, error) {
	s, err := checkSpec(spec)
	if err != nil {
		return s, nil, nil, err
	}
	if ls, _ := launchSpec(s); !sameLaunch(ls, st.ls) {
		return s, nil, nil, fmt.Errorf("%w: the spec's network, terminal, stdin, limits or stats differ from those the run was started with", ErrBadSpec)
	}
	if err := ctx.Err(); err != nil {
		return s, nil, nil, err
	}
	if s.Hostname == "" && s.Network != NetworkHost {
		s.Hostname = st.id[:12] // as docker names a container's host
	}
	rd, err := createRunDir(&s)
	if err != nil {
		return s, nil, nil, err // createRunDir removed what it made
	}
	cfg := initConfig{Spec: s, RunDir: rd.dir, KeepUpper: rd.upper, KeepWork: rd.work, Userns: st.userns}
	msg, err := json.Marshal(&cfg)
	if err != nil {
		return s, rd, nil, fmt.Errorf("encode spec for run init: %w", err)
	}
	return s, rd, msg, nil
}

// closeCgroup removes the run's cgroup.
func closeCgroup(cg cgroup) error {
	if err := cg.Close(); err != nil {
		return fmt.Errorf("remove cgroup: %w", err)
	}
	return nil
}

func warn(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, "imgrun: warning: "+format+"\n", args...)
	}
}

// launch is one run in progress, on the parent's side: start starts the init, then finish
// (or abort) ends it.
type launch struct {
	spec   Spec // launchSpec's fields until finish, then the whole Spec
	cg     cgroup
	stdio  Stdio
	userns bool
	proc   *initProc
	tty    *ptyRelay
	// The parent's ends of the init's pipes (see initEnv).
	specW, errR, statusR *os.File
}

// start starts the init in its namespaces and cgroup. The init then waits for its spec.
func (l *launch) start() (err error) {
	var specR, errW, statusW *os.File
	defer func() { // the init has its own copies; on failure nothing of the launch stays
		closeFiles(specR, errW, statusW)
		if err != nil {
			closeFiles(l.specW, l.errR, l.statusR)
			l.tty.restore()
		}
	}()
	if specR, l.specW, err = os.Pipe(); err != nil {
		return err
	}
	if l.errR, errW, err = os.Pipe(); err != nil {
		return err
	}
	if l.statusR, statusW, err = os.Pipe(); err != nil {
		return err
	}
	exe, err := initExecutable()
	if err != nil {
		return err
	}
	attr := &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWPID,
		Pdeathsig:  unix.SIGKILL,
		Setsid:     true, // no controlling terminal to inject input into (TIOCSTI, D6)
	}
	if l.spec.Network != NetworkHost {
		attr.Cloneflags |= unix.CLONE_NEWNET
	}
	if l.userns {
		attr.Cloneflags |= unix.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
		attr.GidMappingsEnableSetgroups = false
	}
	usedCgroupFD := false
	if c, ok := l.cg.(cgroupFD); ok && c.fd() >= 0 {
		attr.UseCgroupFD, attr.CgroupFD = true, c.fd()
		usedCgroupFD = true
	}
	stdio, err := l.setupStdio(attr)
	if err != nil {
		return err
	}
	l.proc, err = startInitProc(stdio, []*os.File{specR, errW, exe, statusW}, attr) // specFd, errFd, exeFd, statusFd
	l.tty.closeSlave()
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EUSERS) {
			return fmt.Errorf("%w: %v (unprivileged user namespaces may be disabled: see sysctl user.max_user_namespaces and kernel.unprivileged_userns_clone)", ErrNamespaces, err)
		}
		return fmt.Errorf("start run init: %w", err)
	}
	if !usedCgroupFD {
		if err := l.cg.Apply(l.proc.pid); err != nil {
			l.proc.kill()
			l.proc.wait()
			l.proc.release()
			return fmt.Errorf("run: %w", err)
		}
	}
	return nil
}

// abort kills the init before it got its spec, and releases what start made.
func (l *launch) abort() {
	l.proc.kill()
	l.proc.wait()
	l.proc.release()
	closeFiles(l.specW, l.errR, l.statusR)
	l.tty.restore()
}

func closeFiles(fs ...*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}

// finish hands the init its config (msg: spec's initConfig, encoded), relays signals and the
// terminal, and waits. It returns the exit code (128+N for signal N) or why the command never
// started.
func (l *launch) finish(ctx context.Context, spec Spec, msg []byte) (int, syscall.Signal, error) {
	l.spec = spec // the whole Spec from here on (StopTimeout)
	p := l.proc
	defer p.release()
	defer closeFiles(l.specW, l.errR, l.statusR)
	defer l.tty.restore()
	if _, err := l.specW.Write(msg); err != nil {
		p.kill()
		p.wait()
		return 0, 0, fmt.Errorf("send spec to run init: %w", err)
	}
	l.specW.Close()

	// Signals that arrive from here on are held and forwarded once the command runs.
	// Subscribing takes a few hundred microseconds, which the init spends setting up.
	sigc := make(chan os.Signal, 32)
	signal.Notify(sigc, forwardedSignals...)
	defer signal.Stop(sigc)

	// EOF on errFd: the command was executed (errFd is close-on-exec). Data: why not.
	report, _ := io.ReadAll(io.LimitReader(l.errR, 1<<16))
	if len(report) > 0 {
		p.wait()
		var ie initError
		if json.Unmarshal(report, &ie) != nil {
			return 0, 0, fmt.Errorf("run init: %s", report)
		}
		return 0, 0, ie.toError()
	}

	var relays sync.WaitGroup // they signal through p's pidfd: done before p.release
	done := make(chan struct{})
	defer func() {
		close(done)
		relays.Wait()
	}()
	relays.Go(func() { l.forward(sigc, done) })
	relays.Go(func() { l.stopOnCancel(ctx, done) })
	l.tty.start(spec.Stdin)

	st, werr := p.wait()
	l.tty.wait()
	if werr != nil {
		return 0, 0, fmt.Errorf("wait for run: %w", werr)
	}
	switch {
	case st.Exited():
		// The init exits 128+N when signal N killed the command, and says N on statusFd.
		var sig [1]byte
		if n, _ := l.statusR.Read(sig[:]); n == 1 && sig[0] != 0 && st.ExitStatus() == 128+int(sig[0]) {
			return st.ExitStatus(), syscall.Signal(sig[0]), nil
		}
		return st.ExitStatus(), 0, nil
	case st.Signaled():
		return 128 + int(st.Signal()), st.Signal(), nil
	}
	return 0, 0, fmt.Errorf("wait for run: %w", werr)
}

// setupStdio says what the init's stdio is: the caller's streams, or a new pseudo-terminal
// (then attr makes it the controlling terminal).
func (l *launch) setupStdio(attr *syscall.SysProcAttr) (Stdio, error) {
	if l.spec.TTY {
		t, err := newPtyRelay(l.stdio)
		if err != nil {
			return Stdio{}, err
		}
		l.tty = t
		attr.Setctty = true
		attr.Ctty = 0
		return Stdio{Stdin: t.slave, Stdout: t.slave, Stderr: t.slave}, nil
	}
	stdio := Stdio{Stdout: l.stdio.Stdout, Stderr: l.stdio.Stderr}
	if l.spec.Stdin {
		stdio.Stdin = l.stdio.Stdin
	}
	return stdio, nil
}

// forward relays signals to the run's PID 1 until done; SIGWINCH resizes the pty instead.
func (l *launch) forward(sigc <-chan os.Signal, done <-chan struct{}) {
	for {
		select {
		case s := <-sigc:
			if s == unix.SIGWINCH && l.tty != nil {
				l.tty.resize()
				continue
			}
			l.proc.signal(s.(syscall.Signal))
		case <-done:
			return
		}
	}
}

// stopOnCancel stops the run when ctx is cancelled: SIGTERM, then SIGKILL after StopTimeout.
func (l *launch) stopOnCancel(ctx context.Context, done <-chan struct{}) {
	select {
	case <-ctx.Done():
	case <-done:
		return
	}
	l.proc.signal(unix.SIGTERM)
	t := time.NewTimer(l.spec.StopTimeout)
	defer t.Stop()
	select {
	case <-t.C:
		l.proc.kill()
	case <-done:
	}
}

// initProc is the run's init process on the launcher's side. It is started with
// syscall.StartProcess, not os/exec: the first os.StartProcess of a process forks a throwaway
// child to check that pidfds work, and os/exec adds goroutines and /dev/null; together 0.2-0.3
// ms on the path of every run (measured on a 2-core VM). Signals go through a pidfd, so they
// cannot reach another process that reused the pid.
type initProc struct {
	pid, pidfd int
	copies     sync.WaitGroup // of stdio through pipes
	pipes      []*os.File     // the launcher's ends of those pipes
	waitOnce   sync.Once
	ws         syscall.WaitStatus
	werr       error
}

// stdioWaitDelay bounds how long wait waits, once the init is gone, for the stdio copies (as
// os/exec's WaitDelay does): whatever still holds a copy of a pipe could keep it open.
const stdioWaitDelay = time.Second

// startInitProc starts the init (this program's binary as exeFd, see initExecutable) with
// stdio as its descriptors 0-2 and extra as 3 and up. Streams that are not *os.File are copied
// through pipes, nil ones are /dev/null, as os/exec does.
func startInitProc(stdio Stdio, extra []*os.File, attr *syscall.SysProcAttr) (_ *initProc, err error) {
	p := &initProc{pid: -1, pidfd: -1}
	var childEnds []*os.File // closed once the child has its copies
	defer func() {
		closeFiles(childEnds...)
		if err != nil {
			closeFiles(p.pipes...)
		}
	}()
	devNull := func(flag int) (*os.File, error) {
		f, err := os.OpenFile(os.DevNull, flag, 0)
		if err == nil {
			childEnds = append(childEnds, f)
		}
		return f, err
	}
	var fds [3]*os.File
	switch r := stdio.Stdin.(type) {
	case nil:
		if fds[0], err = devNull(os.O_RDONLY); err != nil {
			return nil, err
		}
	case *os.File:
		fds[0] = r
	default:
		pr, pw, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		fds[0], childEnds, p.pipes = pr, append(childEnds, pr), append(p.pipes, pw)
		p.copies.Go(func() {
			io.Copy(pw, r)
			pw.Close()
		})
	}
	for i, w := range []io.Writer{stdio.Stdout, stdio.Stderr} {
		switch f := w.(type) {
		case nil:
			if fds[1+i], err = devNull(os.O_WRONLY); err != nil {
				return nil, err
			}
			continue
		case *os.File:
			fds[1+i] = f
			continue
		}
		if i == 1 && sameWriter(stdio.Stdout, stdio.Stderr) {
			fds[2] = fds[1] // one pipe, so one copy writes at a time (as os/exec does)
			continue
		}
		pr, pw, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		fds[1+i], childEnds, p.pipes = pw, append(childEnds, pw), append(p.pipes, pr)
		p.copies.Go(func() {
			io.Copy(w, pr)
			pr.Close()
		})
	}
	files := make([]uintptr, 0, 3+len(extra))
	for _, f := range append(fds[:], extra...) {
		files = append(files, f.Fd())
	}
	attr.PidFD = &p.pidfd
	env := []string{
		initEnv + "=1",
		// GOMAXPROCS set skips the runtime's reading of the cgroup CPU limit at start, and
		// the init has no use for more than two Ps. GOGC=off until the command runs.
		"GOGC=off", "GOMAXPROCS=2",
	}
	path := "/proc/self/fd/" + strconv.Itoa(exeFd) // the executable, after the child's dup2s
	p.pid, _, err = syscall.StartProcess(path, []string{"imgrun-init"}, &syscall.ProcAttr{Env: env, Files: files, Sys: attr})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// sameWriter reports whether a and b are the same writer (== on values that may not be
// comparable).
func sameWriter(a, b io.Writer) (same bool) {
	defer func() { recover() }()
	return a == b
}

// signal sends sig to the init; after wait it reaches nothing (ESRCH).
func (p *initProc) signal(sig syscall.Signal) {
	unix.PidfdSendSignal(p.pidfd, sig, nil, 0)
}

func (p *initProc) kill() { p.signal(unix.SIGKILL) }

// wait reaps the init (once; later calls return the same status) and lets the stdio copies
// finish.
func (p *initProc) wait() (syscall.WaitStatus, error) {
	p.waitOnce.Do(func() {
		for {
			_, err := syscall.Wait4(p.pid, &p.ws, 0, nil)
			if err != syscall.EINTR {
				p.werr = err
				break
			}
		}
		copied := make(chan struct{})
		go func() {
			p.copies.Wait()
			close(copied)
		}()
		select {
		case <-copied:
		case <-time.After(stdioWaitDelay):
		}
		closeFiles(p.pipes...)
	})
	return p.ws, p.werr
}

// release closes the pidfd, once nothing signals through it any more (after wait).
func (p *initProc) release() {
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
}
