package run

import (
	"errors"
	"fmt"
	"syscall"
)

// Errors of the launcher, for errors.Is. The errors of a run's setup say what failed in one line;
// ErrCommandNotFound and ErrNotExecutable arrive wrapped in an *ExitError with docker's exit codes.
var (
	// ErrBadSpec means the Spec is invalid (no rootfs, relative working directory, ...).
	ErrBadSpec = errors.New("invalid run spec")
	// ErrBadMount means a bind mount is malformed.
	ErrBadMount = errors.New("invalid mount")
	// ErrNoCommand means neither the image nor the user named a command.
	ErrNoCommand = errors.New("no command specified")
	// ErrCommandNotFound means the command does not exist in the rootfs (exit code 127).
	ErrCommandNotFound = errors.New("executable file not found in $PATH")
	// ErrNotExecutable means the command exists but cannot be executed (exit code 126).
	ErrNotExecutable = errors.New("command cannot be executed")
	// ErrUnknownUser means the user or group is not in the image's /etc/passwd or /etc/group,
	// or is out of range.
	ErrUnknownUser = errors.New("unknown user")
	// ErrNamespaces means the kernel refused to create the run's namespaces (not root and
	// unprivileged user namespaces are disabled, or a seccomp filter forbids them).
	ErrNamespaces = errors.New("no permission to create namespaces")
	// ErrUnsafeRootfs means the rootfs tries to redirect a mount the launcher makes (a /proc,
	// /sys or /dev that is a symlink).
	ErrUnsafeRootfs = errors.New("unsafe rootfs")
	// ErrOOMKilled means the run exceeded its memory limit and the kernel killed it (exit 137).
	ErrOOMKilled = errors.New("out of memory: killed by the kernel's OOM killer (raise --memory)")
)

// ExitError reports a run whose command did not exit with status 0.
type ExitError struct {
	// Code is the exit status imgrun should exit with: the command's own, 128+N when it was
	// killed by signal N (137 when OOM-killed), 127 when the command was not found and 126 when
	// it could not be executed.
	Code int
	// Signal is the signal that killed the command, or 0.
	Signal syscall.Signal
	// OOMKilled says the run's cgroup hit its memory limit and the kernel killed the command.
	OOMKilled bool
	// Err is why the command could not be started (wraps ErrCommandNotFound or
	// ErrNotExecutable), or ErrOOMKilled, or nil.
	Err error
}

func (e *ExitError) Error() string {
	switch {
	case e.Err != nil:
		return e.Err.Error()
	case e.Signal != 0:
		return fmt.Sprintf("command killed by signal %d (%v): exit status %d", int(e.Signal), e.Signal, e.Code)
	default:
		return fmt.Sprintf("command exited with status %d", e.Code)
	}
}

func (e *ExitError) Unwrap() error { return e.Err }

// initError is an error the run's init reports before it executes the command. It travels to the
// parent as JSON; kind names the sentinel it wraps.
type initError struct {
	Kind string `json:"kind"`
	Msg  string `json:"msg"`
}

var initErrorKinds = map[string]error{
	"notfound": ErrCommandNotFound,
	"notexec":  ErrNotExecutable,
	"user":     ErrUnknownUser,
	"unsafe":   ErrUnsafeRootfs,
	"spec":     ErrBadSpec,
}

// startError is the parent's view of an initError: its message is the init's, verbatim.
type startError struct {
	msg  string
	kind error
}

func (e *startError) Error() string { return e.msg }
func (e *startError) Unwrap() error { return e.kind }

// toError turns the init's report into the error Run returns.
func (ie initError) toError() error {
	se := &startError{msg: ie.Msg, kind: initErrorKinds[ie.Kind]}
	switch ie.Kind {
	case "notfound":
		return &ExitError{Code: 127, Err: se}
	case "notexec":
		return &ExitError{Code: 126, Err: se}
	}
	return se
}

// kindError tags an error made in the init with the kind the parent maps back to a sentinel.
type kindError struct {
	kind string
	err  error
}

func (e *kindError) Error() string { return e.err.Error() }
func (e *kindError) Unwrap() error { return e.err }

func withKind(kind string, err error) error { return &kindError{kind: kind, err: err} }
