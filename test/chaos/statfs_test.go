//go:build chaos

package chaos

import "syscall"

type (
	syscallStatfs = syscall.Statfs_t
	syscallStat   = syscall.Stat_t
)

func statfs(p string, st *syscallStatfs) error { return syscall.Statfs(p, st) }
