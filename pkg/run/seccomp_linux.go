package run

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A run gets a small seccomp deny-list (D9 in THREATS.md), a subset of docker's default profile:
// the syscalls that a container has no business making and that have a history of kernel
// exploits or escapes: key management, bpf, perf events, userfaultfd, io_uring, module and
// kexec loading, file handles (the "shocker" escape), the mount API, and new user namespaces
// (unshare, setns, clone with CLONE_NEWUSER; clone3 answers ENOSYS so libcs fall back to clone).
// They fail with EPERM. Spec.Unconfined turns the filter off. Architectures without a table
// (deniedSyscalls is nil) run without a filter.

const (
	seccompRetAllow = 0x7fff0000
	seccompRetErrno = 0x00050000
)

// seccompFilter builds the BPF program: check the architecture, refuse the x32 ABI, then the
// table.
func seccompFilter() []unix.SockFilter {
	stmt := func(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }
	jeq := func(k uint32, jt, jf uint8) unix.SockFilter {
		return unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: jt, Jf: jf, K: k}
	}
	deny := stmt(unix.BPF_RET|unix.BPF_K, seccompRetErrno|uint32(unix.EPERM))
	const (
		offNr   = 0  // seccomp_data.nr
		offArch = 4  // seccomp_data.arch
		offArg0 = 16 // seccomp_data.args[0], low 32 bits (little endian)
	)
	prog := []unix.SockFilter{
		stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offArch),
		jeq(seccompArch, 1, 0),
		deny, // another ABI (e.g. 32-bit x86) could bypass the table
		stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offNr),
	}
	if seccompX32Bit != 0 {
		prog = append(prog, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K, Jt: 0, Jf: 1, K: seccompX32Bit}, deny)
	}
	for _, nr := range deniedSyscalls {
		prog = append(prog, jeq(uint32(nr), 0, 1), deny)
	}
	prog = append(prog,
		jeq(uint32(unix.SYS_CLONE3), 0, 1),
		stmt(unix.BPF_RET|unix.BPF_K, seccompRetErrno|uint32(unix.ENOSYS)),
		jeq(uint32(unix.SYS_CLONE), 0, 3),
		stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offArg0),
		unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K, Jt: 0, Jf: 1, K: unix.CLONE_NEWUSER},
		deny,
		stmt(unix.BPF_RET|unix.BPF_K, seccompRetAllow),
	)
	return prog
}

// installSeccomp loads the filter into the calling thread (which then executes the command).
// It needs no_new_privs or CAP_SYS_ADMIN: the init calls it before dropping capabilities.
func installSeccomp() error {
	if deniedSyscalls == nil {
		return nil
	}
	f := seccompFilter()
	prog := unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}
	if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&prog)), 0, 0); err != nil {
		return fmt.Errorf("install seccomp filter: %w", err)
	}
	return nil
}
