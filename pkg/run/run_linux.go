package run

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
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
func RunStats(ctx context.Context, spec Spec, stdio Stdio) (_ *Stats, err error) {
	s, err := spec.normalize()
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(s.Rootfs); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%w: rootfs %s is not a directory", ErrBadSpec, s.Rootfs)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rootless := os.Geteuid() != 0
	rd, err := createRunDir(&s)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, rd.remove()) }()

	// A cgroup costs a v1 migration (an RCU grace period, ~5-10 ms) on every start; without
	// limits or stats it would only kill stragglers, which the PID namespace already does.
	var cg cgroup = noopCgroup{}
	if !s.Limits.isZero() || s.Stats {
		cleanupStaleCgroups() // what killed runs left; best effort, never blocks a run
		cg, err = newCgroup(rd.id, s.Limits)
	}
	if err != nil {
		if !rootless || !errors.Is(err, ErrCgroupAccess) {
			return nil, fmt.Errorf("run: %w", err)
		}
		warn(stdio.Stderr, "resource limits are not applied: %v", err)
		cg, err = noopCgroup{}, nil
	}
	defer func() {
		if cerr := cg.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("remove cgroup: %w", cerr))
		}
	}()

	l := &launch{spec: s, rd: rd, cg: cg, stdio: stdio, userns: rootless}
	code, sig, err := l.run(ctx)
	if err != nil {
		return nil, err
	}
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

func warn(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, "imgrun: warning: "+format+"\n", args...)
	}
}

// launch is one run in progress, on the parent's side.
type launch struct {
	spec   Spec
	rd     *runDir
	cg     cgroup
	stdio  Stdio
	userns bool
	cmd    *exec.Cmd
	tty    *ptyRelay
}

// run starts the init, hands it the spec, relays signals and the terminal, and waits.
// It returns the exit code (128+N for signal N) or why the command never started.
func (l *launch) run(ctx context.Context) (int, syscall.Signal, error) {
	specR, specW, err := os.Pipe()
	if err != nil {
		return 0, 0, err
	}
	defer specW.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		specR.Close()
		return 0, 0, err
	}
	defer errR.Close()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		specR.Close()
		errW.Close()
		return 0, 0, err
	}
	defer statusR.Close()
	exe, err := initExecutable()
	if err != nil {
		specR.Close()
		errW.Close()
		statusW.Close()
		return 0, 0, err
	}

	cmd := &exec.Cmd{
		Path:       fmt.Sprintf("/proc/self/fd/%d", exeFd), // exe, after the child's dup2s
		Args:       []string{"imgrun-init"},
		Env:        []string{initEnv + "=1", "GOGC=off"},
		ExtraFiles: []*os.File{specR, errW, exe, statusW}, // specFd, errFd, exeFd, statusFd
		WaitDelay:  time.Second,
	}
	l.cmd = cmd
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
	cmd.SysProcAttr = attr
	if err := l.setupStdio(); err != nil {
		specR.Close()
		errW.Close()
		statusW.Close()
		return 0, 0, err
	}
	defer l.tty.restore()

	// Signals that arrive from here on are held and forwarded once the command runs.
	sigc := make(chan os.Signal, 32)
	signal.Notify(sigc, forwardedSignals...)
	defer signal.Stop(sigc)

	err = cmd.Start()
	specR.Close()
	errW.Close()
	statusW.Close()
	l.tty.closeSlave()
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EUSERS) {
			return 0, 0, fmt.Errorf("%w: %v (unprivileged user namespaces may be disabled: see sysctl user.max_user_namespaces and kernel.unprivileged_userns_clone)", ErrNamespaces, err)
		}
		return 0, 0, fmt.Errorf("start run init: %w", err)
	}
	if !usedCgroupFD {
		if err := l.cg.Apply(cmd.Process.Pid); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return 0, 0, fmt.Errorf("run: %w", err)
		}
	}
	cfg := initConfig{Spec: l.spec, RunDir: l.rd.dir, KeepUpper: l.rd.upper, KeepWork: l.rd.work, Userns: l.userns}
	if err := json.NewEncoder(specW).Encode(&cfg); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return 0, 0, fmt.Errorf("send spec to run init: %w", err)
	}
	specW.Close()

	// EOF on errFd: the command was executed (errFd is close-on-exec). Data: why not.
	report, _ := io.ReadAll(io.LimitReader(errR, 1<<16))
	if len(report) > 0 {
		cmd.Wait()
		var ie initError
		if json.Unmarshal(report, &ie) != nil {
			return 0, 0, fmt.Errorf("run init: %s", report)
		}
		return 0, 0, ie.toError()
	}

	done := make(chan struct{})
	defer close(done)
	go l.forward(sigc, done)
	go l.stopOnCancel(ctx, done)
	l.tty.start(l.spec.Stdin)

	werr := cmd.Wait()
	l.tty.wait()
	st, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok {
		return 0, 0, fmt.Errorf("wait for run: %w", werr)
	}
	switch {
	case st.Exited():
		// The init exits 128+N when signal N killed the command, and says N on statusFd.
		var sig [1]byte
		if n, _ := statusR.Read(sig[:]); n == 1 && sig[0] != 0 && st.ExitStatus() == 128+int(sig[0]) {
			return st.ExitStatus(), syscall.Signal(sig[0]), nil
		}
		return st.ExitStatus(), 0, nil
	case st.Signaled():
		return 128 + int(st.Signal()), st.Signal(), nil
	}
	return 0, 0, fmt.Errorf("wait for run: %w", werr)
}

// setupStdio connects the init's stdio: the caller's streams, or a new pseudo-terminal.
func (l *launch) setupStdio() error {
	if l.spec.TTY {
		t, err := newPtyRelay(l.stdio)
		if err != nil {
			return err
		}
		l.tty = t
		l.cmd.Stdin, l.cmd.Stdout, l.cmd.Stderr = t.slave, t.slave, t.slave
		l.cmd.SysProcAttr.Setctty = true
		l.cmd.SysProcAttr.Ctty = 0
		return nil
	}
	if l.spec.Stdin {
		l.cmd.Stdin = l.stdio.Stdin
	}
	l.cmd.Stdout, l.cmd.Stderr = l.stdio.Stdout, l.stdio.Stderr
	return nil
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
			l.cmd.Process.Signal(s)
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
	l.cmd.Process.Signal(unix.SIGTERM)
	t := time.NewTimer(l.spec.StopTimeout)
	defer t.Stop()
	select {
	case <-t.C:
		l.cmd.Process.Kill()
	case <-done:
	}
}
