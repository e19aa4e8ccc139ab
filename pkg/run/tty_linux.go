package run

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// ptyRelay is the pseudo-terminal of a -t run: the command gets the slave end as its
// controlling terminal, the parent relays the master end to the caller's streams, puts the
// caller's terminal in raw mode (so Ctrl-C reaches the command's terminal, as with docker) and
// copies its window size.
type ptyRelay struct {
	master, slave *os.File
	stdio         Stdio
	restoreState  *term.State
	rawFd         int // the terminal restoreState belongs to
	termFd        int // the caller's terminal, or -1
	outDone       chan struct{}
}

func newPtyRelay(stdio Stdio) (*ptyRelay, error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("open pty: %w", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		return nil, fmt.Errorf("unlock pty: %w", err)
	}
	sfd, _, errno := unix.Syscall(unix.SYS_IOCTL, m.Fd(), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	var slave *os.File
	if errno == 0 {
		slave = os.NewFile(sfd, "pty")
	} else { // kernels before 4.13: open the slave by name
		n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
		if err == nil {
			slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
		}
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("open pty slave: %w", err)
		}
	}
	t := &ptyRelay{master: m, slave: slave, stdio: stdio, termFd: -1, outDone: make(chan struct{})}
	for _, s := range []any{stdio.Stdin, stdio.Stdout} {
		if f, ok := s.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			t.termFd = int(f.Fd())
			break
		}
	}
	t.resize()
	return t, nil
}

// closeSlave drops the parent's copy of the slave once the init has its own.
func (t *ptyRelay) closeSlave() {
	if t != nil && t.slave != nil {
		t.slave.Close()
		t.slave = nil
	}
}

// start relays output and, with stdin, input and raw mode.
func (t *ptyRelay) start(stdin bool) {
	if t == nil {
		return
	}
	if stdin && t.stdio.Stdin != nil {
		if f, ok := t.stdio.Stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			t.rawFd = int(f.Fd())
			t.restoreState, _ = term.MakeRaw(t.rawFd)
		}
		go io.Copy(t.master, t.stdio.Stdin)
	}
	go func() {
		defer close(t.outDone)
		if t.stdio.Stdout != nil {
			io.Copy(t.stdio.Stdout, t.master) // ends with EIO once every slave is closed
		} else {
			io.Copy(io.Discard, t.master)
		}
	}()
}

// wait lets the output drain after the command ended.
func (t *ptyRelay) wait() {
	if t == nil {
		return
	}
	select {
	case <-t.outDone:
	case <-time.After(2 * time.Second):
	}
}

// resize copies the caller's window size to the pty.
func (t *ptyRelay) resize() {
	if t == nil || t.termFd < 0 {
		return
	}
	if ws, err := unix.IoctlGetWinsize(t.termFd, unix.TIOCGWINSZ); err == nil {
		unix.IoctlSetWinsize(int(t.master.Fd()), unix.TIOCSWINSZ, ws)
	}
}

// restore puts the caller's terminal back and closes the pty.
func (t *ptyRelay) restore() {
	if t == nil {
		return
	}
	if t.restoreState != nil {
		term.Restore(t.rawFd, t.restoreState)
	}
	t.closeSlave()
	t.master.Close()
}
