//go:build chaos

package chaos

import "syscall"

type syscallStatfs = syscall.Statfs_t

func statfs(p string, st *syscallStatfs) error { return syscall.Statfs(p, st) }
