package run

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The cgroup v2 device filter: cgroup v2 has no devices controller, so device access is decided by
// a BPF_PROG_TYPE_CGROUP_DEVICE program attached to the run's cgroup. The kernel runs it on every
// open and mknod of a device node by a process in the cgroup; returning 0 denies with EPERM.
// The program is a handful of instructions written out below rather than compiled, so imgrun needs
// no BPF toolchain or library.

// bpfInsn is struct bpf_insn: opcode, dst and src registers (4 bits each), offset, immediate.
type bpfInsn struct {
	code     uint8
	dst, src uint8
	off      int16
	imm      int32
}

// Opcodes used by the filter (linux/bpf.h, linux/bpf_common.h).
const (
	opLdxW   = unix.BPF_LDX | unix.BPF_MEM | unix.BPF_W   // dst = *(u32 *)(src + off)
	opAnd64K = unix.BPF_ALU64 | unix.BPF_AND | unix.BPF_K // dst &= imm
	opMov64K = unix.BPF_ALU64 | unix.BPF_MOV | unix.BPF_K // dst = imm
	opJneK   = unix.BPF_JMP | unix.BPF_JNE | unix.BPF_K   // if dst != imm: pc += off
	opExit   = unix.BPF_JMP | unix.BPF_EXIT               // return r0
)

// Registers: r1 holds the context on entry, r0 the return value.
const (
	r0, r1, r2, r3, r4 = 0, 1, 2, 3, 4
)

// deviceFilterInsns builds the program for devs. The context is struct bpf_cgroup_dev_ctx:
// u32 access_type (access << 16 | type), u32 major, u32 minor. Every allowed device is allowed for
// read, write and mknod, so only the type, major and minor are compared:
//
//	r2 = ctx->access_type & 0xffff; r3 = ctx->major; r4 = ctx->minor
//	if r2 != CHAR goto deny
//	for each device: if r3 == major && (any minor || r4 == minor) return 1
//	deny: return 0
func deviceFilterInsns(devs []runDevice) []bpfInsn {
	prog := []bpfInsn{
		{code: opLdxW, dst: r2, src: r1, off: 0},
		{code: opAnd64K, dst: r2, imm: 0xffff},
		{code: opLdxW, dst: r3, src: r1, off: 4},
		{code: opLdxW, dst: r4, src: r1, off: 8},
		{code: opJneK, dst: r2, imm: unix.BPF_DEVCG_DEV_CHAR}, // off patched to reach deny
	}
	typeCheck := len(prog) - 1
	for _, d := range devs {
		// Each block: [major check] [minor check] r0 = 1; exit. A failed check skips the rest of it.
		block := []bpfInsn{{code: opJneK, dst: r3, imm: int32(d.major)}}
		if d.minor >= 0 {
			block = append(block, bpfInsn{code: opJneK, dst: r4, imm: int32(d.minor)})
		}
		block = append(block, bpfInsn{code: opMov64K, dst: r0, imm: 1}, bpfInsn{code: opExit})
		for i := range block {
			if block[i].code == opJneK {
				block[i].off = int16(len(block) - i - 1) // to the instruction after the block
			}
		}
		prog = append(prog, block...)
	}
	prog[typeCheck].off = int16(len(prog) - typeCheck - 1)
	return append(prog, bpfInsn{code: opMov64K, dst: r0, imm: 0}, bpfInsn{code: opExit})
}

// encodeInsns lays instructions out as the kernel reads them. The register nibbles follow the
// C bitfield order, which depends on the byte order.
func encodeInsns(prog []bpfInsn) []byte {
	bigEndian := binary.NativeEndian.Uint16([]byte{0, 1}) == 1
	b := make([]byte, 0, 8*len(prog))
	for _, in := range prog {
		regs := in.dst | in.src<<4
		if bigEndian {
			regs = in.dst<<4 | in.src
		}
		b = append(b, in.code, regs)
		b = binary.NativeEndian.AppendUint16(b, uint16(in.off))
		b = binary.NativeEndian.AppendUint32(b, uint32(in.imm))
	}
	return b
}

// bpfProgLoadAttr is the BPF_PROG_LOAD member of union bpf_attr, up to expected_attach_type.
type bpfProgLoadAttr struct {
	progType           uint32
	insnCnt            uint32
	insns              uint64
	license            uint64
	logLevel           uint32
	logSize            uint32
	logBuf             uint64
	kernVersion        uint32
	progFlags          uint32
	progName           [16]byte
	progIfindex        uint32
	expectedAttachType uint32
}

// bpfProgAttachAttr is the BPF_PROG_ATTACH member of union bpf_attr.
type bpfProgAttachAttr struct {
	targetFD     uint32
	attachBPFFD  uint32
	attachType   uint32
	attachFlags  uint32
	replaceBPFFD uint32
}

// attachDeviceFilter loads the runDevices filter and attaches it to the cgroup open at cgroupFD.
// BPF_F_ALLOW_MULTI lets it sit beside filters an ancestor (e.g. systemd) attached: all must allow.
// The program fd is closed at once; the attachment holds the program until the cgroup is removed.
func attachDeviceFilter(cgroupFD int) error {
	code := encodeInsns(deviceFilterInsns(runDevices))
	license := []byte("Apache-2.0\x00")
	load := bpfProgLoadAttr{
		progType: unix.BPF_PROG_TYPE_CGROUP_DEVICE,
		insnCnt:  uint32(len(code) / 8),
		insns:    uint64(uintptr(unsafe.Pointer(&code[0]))),
		license:  uint64(uintptr(unsafe.Pointer(&license[0]))),
	}
	copy(load.progName[:], "imgrun_dev")
	var progFD uintptr
	var errno unix.Errno
	// The verifier gives up with EAGAIN when a signal is pending, and Go's runtime sends SIGURG
	// for preemption at any time: retry, as libbpf does.
	for range 10 {
		progFD, _, errno = unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&load)), unsafe.Sizeof(load))
		if errno != unix.EAGAIN && errno != unix.EINTR {
			break
		}
	}
	runtime.KeepAlive(code)
	runtime.KeepAlive(license)
	if errno != 0 {
		return fmt.Errorf("bpf prog load: %w", errno)
	}
	defer unix.Close(int(progFD))
	attach := bpfProgAttachAttr{
		targetFD:    uint32(cgroupFD),
		attachBPFFD: uint32(progFD),
		attachType:  unix.BPF_CGROUP_DEVICE,
		attachFlags: unix.BPF_F_ALLOW_MULTI,
	}
	if _, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_ATTACH, uintptr(unsafe.Pointer(&attach)), unsafe.Sizeof(attach)); errno != 0 {
		return fmt.Errorf("bpf prog attach: %w", errno)
	}
	return nil
}
