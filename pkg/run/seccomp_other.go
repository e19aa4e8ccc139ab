//go:build linux && !amd64

package run

// No seccomp table for this architecture yet: runs have no filter.
const (
	seccompArch   = 0
	seccompX32Bit = 0
)

var deniedSyscalls []int
