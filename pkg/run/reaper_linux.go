package run

import (
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// initSignals is the init's subscription to the signals it forwards to the command. Each signal
// signal.Notify enables is a round trip to the Go runtime's signal-mask thread, and the init's
// main thread is locked, so subscribing costs 0.5-1 ms of handoffs between threads, measured
// on a 2-core VM. The init therefore subscribes from a goroutine started as soon as this
// package is initialized (see init below), in parallel with the container's setup on the
// locked thread; superviseCommand waits for it before the fork, so no signal is missed. A
// signal that arrives before the command exists waits in the channel and reaches the command
// once it runs.
var initSignals = sync.OnceValue(func() chan os.Signal {
	c := make(chan os.Signal, 64)
	signal.Notify(c, forwardedSignals...)
	return c
})

// init becomes the run's init (MaybeInit) as soon as this package is initialized, in the
// process Run starts for that, instead of from main: the packages initialized after this one
// (in imgrun: the registry client, net/http, crypto/tls, cobra, ...) then never run their
// initialization in the init, which has no use for them: 0.2-0.3 ms of the 1-1.5 ms of
// package initialization on the path of every run (GODEBUG=inittrace=1, 2-core VM). The call
// in main stays as documented; in the init it is never reached.
func init() {
	if isRunInit() {
		go initSignals()
		MaybeInit()
	}
}

// isRunInit reports whether this process is a run's init (see MaybeInit).
func isRunInit() bool {
	return os.Getenv(initEnv) == "1" && os.Getpid() == 1
}

// superviseCommand is the init's life as PID 1 of the run (see doc.go): it starts the command
// as its child and waits for it, reaping whatever else the namespace hands it, then exits with
// the command's status. It returns only when the command could not be started.
//
// The command is forked from the init's locked thread, so it inherits that thread's seccomp
// filter, capability bounding set and no_new_privs (confineThread), and switches to cred in
// the child (Go's fork sets groups, gid and uid with raw system calls, then the parent-death
// signal). syscall.ForkExec, not os.StartProcess: the latter asks for a pidfd with clone3,
// which the seccomp filter answers ENOSYS.
func superviseCommand(argv0 string, args, env []string, cred *syscall.Credential, tty bool) error {
	// Subscribed before the fork (initSignals), so that no signal is missed; the parent holds
	// the signals it got until errFd says the command runs.
	sigc := initSignals()
	attr := &syscall.ProcAttr{
		Env:   env,
		Files: []uintptr{0, 1, 2},
		Sys: &syscall.SysProcAttr{
			Credential: cred,
			Pdeathsig:  unix.SIGKILL,
			// With a terminal the command gets its own foreground process group, so the
			// terminal's Ctrl-C reaches it, not the init.
			Foreground: tty,
			Ctty:       0,
		},
	}
	pid, err := syscall.ForkExec(argv0, args, attr)
	if err != nil {
		return execError(args[0], err)
	}
	// Signals go through a pidfd: once reap has collected the command, its pid may name
	// another process of the run.
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		unix.Kill(pid, unix.SIGKILL)
		return fmt.Errorf("pidfd_open: %w", err)
	}
	go forwardSignals(pidfd, sigc)
	unix.Close(errFd)       // EOF: the command runs
	debug.SetGCPercent(100) // the launcher started the init with GOGC=off; it may live long
	ws := reap(pid)

	var sig byte
	code := ws.ExitStatus()
	if ws.Signaled() {
		sig = byte(ws.Signal())
		code = 128 + int(ws.Signal())
	}
	unix.Write(statusFd, []byte{sig})
	os.Exit(code)
	return nil
}

// forwardSignals relays what the init receives to the command.
func forwardSignals(pidfd int, sigc <-chan os.Signal) {
	for s := range sigc {
		unix.PidfdSendSignal(pidfd, s.(syscall.Signal), nil, 0)
	}
}

// reap waits for every child of the init until child has exited, and returns its status.
// Orphans of the run are re-parented to the init (PID 1): without this, each would stay a
// zombie until the run ends. A blocking wait4 on the init's thread: no SIGCHLD handling.
func reap(child int) unix.WaitStatus {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		switch {
		case err == unix.EINTR:
		case err != nil: // ECHILD cannot happen while child lives
			return ws
		case pid == child && (ws.Exited() || ws.Signaled()):
			return ws // what is left of the run dies with PID 1
		}
	}
}
