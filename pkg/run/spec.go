package run

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Network is the network a run gets.
type Network string

const (
	// NetworkNone (the default) gives the run a new network namespace with only the loopback
	// interface, brought up.
	NetworkNone Network = "none"
	// NetworkHost shares the host's network namespace, like docker's --net host.
	NetworkHost Network = "host"
)

// DefaultPath is the PATH a run gets when neither the image nor the user set one (docker's).
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// defaultStopTimeout is docker stop's grace between SIGTERM and SIGKILL.
const defaultStopTimeout = 10 * time.Second

// Spec says what to run and how. It is plain data: Run sends it to the run's init as JSON.
// SpecFromImage fills the image-config fields (Args, Env, Dir, User) by docker's rules; the
// caller sets the rest.
type Spec struct {
	// Rootfs is the directory tree to run in. A run never modifies it: it is the read-only lower
	// layer of an overlay whose writable upper layer is in memory (a tmpfs of the run, charged to
	// its cgroup), or in KeepDir. With Lowers it is the top layer of the image's layer stack.
	Rootfs string
	// Lowers are read-only layers below Rootfs, top first: with them the image is a layer stack,
	// as pkg/rootfs snapshots produce, which overlayfs composes at run time (lowerdir=
	// Rootfs:Lowers[0]:Lowers[1]:...). Rootfs and each lower are overlayfs layers: a deleted path
	// is a whiteout (a character device 0:0) and a directory that hides what is below it carries
	// the xattr trusted.overlay.opaque="y" (user.overlay.opaque in a rootless run, whose overlay
	// reads user.overlay.* xattrs only). A run never modifies them. A single layer is not the
	// image, so a layer stack needs overlayfs: there is no read-only bind fallback.
	Lowers []string
	// Args is the command and its arguments. Args[0] without a slash is looked up on the PATH
	// of Env, inside the rootfs.
	Args []string
	// Env is the command's whole environment, KEY=VALUE. PATH defaults to DefaultPath, HOME to
	// the user's home from the image's /etc/passwd, HOSTNAME to Hostname.
	Env []string
	// Dir is the working directory inside the rootfs (absolute; "/" when empty). It is created
	// when missing.
	Dir string
	// User is "user[:group]", names or numbers, resolved in the image's /etc/passwd and
	// /etc/group. Empty means root (0:0).
	User string
	// Hostname is the run's host name; empty means the first 12 hex digits of the run's id
	// (the host's name with NetworkHost).
	Hostname string
	// Mounts are bind mounts from the host (docker's -v HOST:CONTAINER[:ro]).
	Mounts []Mount
	// Network is NetworkNone (also when empty) or NetworkHost.
	Network Network
	// ReadOnly mounts the run's root file system read-only (/tmp, /dev/shm and Mounts stay as
	// they are).
	ReadOnly bool
	// KeepDir, when set, keeps the run's writable layer on disk: the overlay's upper directory
	// is KeepDir/upper and stays after the run (KeepDir is created when missing; a KeepDir
	// used before is continued).
	KeepDir string
	// TTY gives the command a pseudo-terminal (docker's -t). Its output is relayed to
	// Stdio.Stdout, the host terminal is put in raw mode and window size changes are forwarded.
	TTY bool
	// Stdin relays Stdio.Stdin to the command (docker's -i); otherwise its stdin is /dev/null.
	Stdin bool
	// Limits are the run's cgroup limits. Without root they are applied only where a cgroup
	// can be created; otherwise Run warns on Stdio.Stderr and runs without them.
	Limits Limits
	// Stats makes the run's cgroup collect what RunStats returns (peak memory, CPU time) even
	// without Limits. A run with neither gets no cgroup: its PID namespace already ends every
	// process of the run when the command exits, and a cgroup costs milliseconds per start.
	Stats bool
	// StateDir (ROOT/runs) is where the run's init mounts the run's private tmpfs, visible in
	// the run's mount namespace only: the writable layer, the mount point of the root and the
	// files bound at /etc/hosts, /etc/hostname and /etc/resolv.conf live there and vanish with
	// the run. Nothing is written to it on the host. Rootfs, Lowers, KeepDir and Mounts must
	// not be inside it. Empty means a temporary directory made and removed by each run.
	StateDir string
	// NewPrivileges lets setuid binaries and file capabilities in the image raise privileges.
	// By default (false) the command runs with no_new_privs and the rootfs is mounted nosuid.
	NewPrivileges bool
	// Unconfined runs the command without the seccomp filter (docker's
	// --security-opt seccomp=unconfined), e.g. for programs that make user namespaces.
	Unconfined bool
	// NoInit executes the command as PID 1 of the run, like docker run without --init: it
	// then gets only the signals it handles and must reap orphaned processes itself. By
	// default (false) a minimal init is PID 1: it forwards signals to the command, reaps
	// zombies and exits with the command's status, like docker run --init.
	NoInit bool
	// NoPivot enters the root by moving it over the mount namespace's root and chrooting into
	// it instead of pivot_root, like runc's --no-pivot (for a root on a ramdisk). The init falls
	// back to it by itself where pivot_root fails (an initramfs root). The host's tree then
	// stays in the run's mount namespace, covered by the run's root and out of its reach
	// unless a process of the run gets CAP_SYS_ADMIN (see root_linux.go).
	NoPivot bool
	// StopTimeout is how long Run waits after sending SIGTERM, when ctx is cancelled, before it
	// kills the run. Zero means 10 s.
	StopTimeout time.Duration
}

// Mount is a bind mount of a host path into the run.
type Mount struct {
	Source   string // host path, absolute
	Target   string // path inside the run, absolute; created (in-root) when missing
	ReadOnly bool
}

// Stdio are the run's standard streams. *os.File values are passed to the command as they are;
// other readers and writers are copied through pipes. Nil streams are /dev/null.
type Stdio struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// ParseMount parses docker's -v syntax: HOST:CONTAINER[:ro|:rw]. HOST must be an absolute path
// (named volumes do not exist here).
func ParseMount(s string) (Mount, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return Mount{}, fmt.Errorf("%w: %q: want HOST:CONTAINER[:ro]", ErrBadMount, s)
	}
	m := Mount{Source: parts[0], Target: parts[1]}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			m.ReadOnly = true
		case "rw":
		default:
			return Mount{}, fmt.Errorf("%w: %q: unknown option %q (want ro or rw)", ErrBadMount, s, parts[2])
		}
	}
	if err := m.validate(); err != nil {
		return Mount{}, err
	}
	return m, nil
}

func (m Mount) validate() error {
	if !filepath.IsAbs(m.Source) {
		return fmt.Errorf("%w: source %q is not an absolute host path", ErrBadMount, m.Source)
	}
	if !filepath.IsAbs(m.Target) {
		return fmt.Errorf("%w: target %q is not an absolute path", ErrBadMount, m.Target)
	}
	if filepath.Clean(m.Target) == "/" {
		return fmt.Errorf("%w: cannot mount over /", ErrBadMount)
	}
	return nil
}

// normalize checks s and fills its defaults.
func (s Spec) normalize() (Spec, error) {
	if s.Rootfs == "" {
		return s, fmt.Errorf("%w: no rootfs", ErrBadSpec)
	}
	abs, err := filepath.Abs(s.Rootfs)
	if err != nil {
		return s, fmt.Errorf("%w: rootfs: %v", ErrBadSpec, err)
	}
	s.Rootfs = abs
	if s.Lowers, err = absLowers(s.Lowers); err != nil {
		return s, err
	}
	if len(s.Args) == 0 || s.Args[0] == "" {
		return s, ErrNoCommand
	}
	if s.Dir == "" {
		s.Dir = "/"
	}
	if !filepath.IsAbs(s.Dir) {
		return s, fmt.Errorf("%w: working directory %q is not an absolute path", ErrBadSpec, s.Dir)
	}
	switch s.Network {
	case "":
		s.Network = NetworkNone
	case NetworkNone, NetworkHost:
	default:
		return s, fmt.Errorf("%w: network %q: want none or host", ErrBadSpec, s.Network)
	}
	for _, m := range s.Mounts {
		if err := m.validate(); err != nil {
			return s, err
		}
	}
	if strings.ContainsAny(s.Hostname, "/\x00 ") || len(s.Hostname) > 64 {
		return s, fmt.Errorf("%w: invalid hostname %q", ErrBadSpec, s.Hostname)
	}
	if s.StopTimeout <= 0 {
		s.StopTimeout = defaultStopTimeout
	}
	for _, kv := range s.Env {
		if k, _, _ := strings.Cut(kv, "="); k == "" || strings.ContainsRune(kv, 0) {
			return s, fmt.Errorf("%w: bad environment entry %q", ErrBadSpec, kv)
		}
	}
	return s, nil
}

// absLowers returns lowers made absolute, each checked to be a directory (like Rootfs, which Run
// checks).
func absLowers(lowers []string) ([]string, error) {
	if len(lowers) == 0 {
		return nil, nil
	}
	out := make([]string, len(lowers))
	for i, l := range lowers {
		abs, err := filepath.Abs(l)
		if l == "" || err != nil {
			return nil, fmt.Errorf("%w: lower layer %d: %q is not a directory", ErrBadSpec, i+1, l)
		}
		if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("%w: lower layer %d: %s is not a directory", ErrBadSpec, i+1, abs)
		}
		out[i] = abs
	}
	return out, nil
}
