package run

import (
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"golang.org/x/sys/unix"
)

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
	// Installed before the fork, so that no signal is missed; the parent holds the signals it
	// got until errFd says the command runs.
	sigc := make(chan os.Signal, 64)
	signal.Notify(sigc, forwardedSignals...)
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
