package run

import (
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// defaultCaps is docker's default capability set: what root inside a run keeps.
var defaultCaps = []uintptr{
	unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FSETID, unix.CAP_FOWNER, unix.CAP_MKNOD,
	unix.CAP_NET_RAW, unix.CAP_SETGID, unix.CAP_SETUID, unix.CAP_SETFCAP, unix.CAP_SETPCAP,
	unix.CAP_NET_BIND_SERVICE, unix.CAP_SYS_CHROOT, unix.CAP_KILL, unix.CAP_AUDIT_WRITE,
}

// confineThread installs the seccomp filter (while CAP_SYS_ADMIN still allows it without
// no_new_privs), drops the capability bounding set to defaultCaps, clears the inheritable and
// ambient sets and sets no_new_privs unless allowed. All of these are attributes of the calling
// thread (the init's locked thread), inherited by the command it forks or becomes: nothing
// here signals the init's other threads, which a process-wide change (Go's syscall.Setuid
// and friends) does at a cost of milliseconds.
func confineThread(newPrivs, unconfined bool) error {
	if !unconfined {
		if err := installSeccomp(); err != nil {
			return err
		}
	}
	var keep [2]uint32
	for _, c := range defaultCaps {
		keep[c/32] |= 1 << (c % 32)
	}
	for c := uintptr(0); c <= unix.CAP_LAST_CAP; c++ {
		if keep[c/32]&(1<<(c%32)) != 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{
		{Effective: keep[0], Permitted: keep[0]},
		{Effective: keep[1], Permitted: keep[1]},
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	if !newPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("set no_new_privs: %w", err)
		}
	}
	return nil
}

// credential is the identity the command runs as (a non-root user then has no capabilities
// left). A user namespace made by an unprivileged caller maps only root and forbids setgroups.
func credential(u execUser, userns bool) (*syscall.Credential, error) {
	if userns && (u.UID != 0 || u.GID != 0) {
		return nil, withKind("user", fmt.Errorf("%w: user %d:%d is not mapped: without root, a run can only run as root (uid 0)", ErrUnknownUser, u.UID, u.GID))
	}
	return &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups, NoSetGroups: userns}, nil
}

// becomeUser switches the calling thread, which then executes the command in place of the
// init, to cred, and re-arms the parent-death signal (a credential change clears it). Raw,
// per-thread system calls: execve makes the thread's credentials the process's.
func becomeUser(cred *syscall.Credential) error {
	if !cred.NoSetGroups {
		var gp *uint32
		if len(cred.Groups) > 0 {
			gp = &cred.Groups[0]
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(cred.Groups)), uintptr(unsafe.Pointer(gp)), 0); e != 0 {
			return fmt.Errorf("setgroups: %w", e)
		}
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(cred.Gid), uintptr(cred.Gid), uintptr(cred.Gid)); e != 0 {
		return fmt.Errorf("setgid %d: %w", cred.Gid, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(cred.Uid), uintptr(cred.Uid), uintptr(cred.Uid)); e != 0 {
		return fmt.Errorf("setuid %d: %w", cred.Uid, e)
	}
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("set parent death signal: %w", err)
	}
	return nil
}

// loopbackUp brings up lo in the run's new network namespace (SIOCSIFFLAGS: no ip binary).
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback: get flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback: up: %w", err)
	}
	return nil
}
