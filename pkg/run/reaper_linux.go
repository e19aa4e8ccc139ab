package run

import (
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
	// Installed before the fork, so that neither a signal nor the child's exit is missed; the
	// parent holds the signals it got until errFd says the command runs.
	sigc := make(chan os.Signal, 64)
	signal.Notify(sigc, append([]os.Signal{unix.SIGCHLD}, forwardedSignals...)...)
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
	unix.Close(errFd)       // EOF: the command runs
	debug.SetGCPercent(100) // the launcher started the init with GOGC=off; it may live long
	ws := reap(pid, sigc)

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

// reap forwards signals to child and reaps every child of the init until child has exited,
// and returns its status. Orphans of the run are re-parented to the init (PID 1): without
// this, each would stay a zombie until the run ends.
func reap(child int, sigc <-chan os.Signal) unix.WaitStatus {
	for s := range sigc {
		if s != unix.SIGCHLD {
			unix.Kill(child, s.(syscall.Signal)) // not yet reaped below: the pid is still ours
			continue
		}
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if err == unix.EINTR {
				continue
			}
			if err != nil || pid <= 0 {
				break
			}
			if pid == child && (ws.Exited() || ws.Signaled()) {
				return ws // what is left of the run dies with PID 1
			}
		}
	}
	panic("unreachable: signal channel closed")
}
