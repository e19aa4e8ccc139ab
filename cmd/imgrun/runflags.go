package main

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/imgrun/imgrun/pkg/run"
)

// runFlags are `imgrun run`'s flags, spelled as docker spells them.
type runFlags struct {
	env        []string
	envFiles   []string
	workdir    string
	user       string
	entrypoint string
	tty        bool
	stdin      bool
	hostname   string
	volumes    []string
	network    string
	memory     string
	cpus       float64
	cpuShares  uint64
	pidsLimit  int64
	readBps    []string
	writeBps   []string
	readOnly   bool
	noPivot    bool
	keep       string
	stats      bool
	pull       string
	platform   string
	rm         bool // accepted for docker muscle memory: every run is removed anyway
}

func (f *runFlags) register(fs *pflag.FlagSet) {
	fs.StringArrayVarP(&f.env, "env", "e", nil, "set `KEY=VAL` (a bare KEY copies imgrun's own value)")
	fs.StringArrayVar(&f.envFiles, "env-file", nil, "read environment variables from `FILE` (KEY=VAL lines)")
	fs.StringVarP(&f.workdir, "workdir", "w", "", "working `DIR` inside the container")
	fs.StringVarP(&f.user, "user", "u", "", "run as `USER[:GROUP]` (names or numbers)")
	fs.StringVar(&f.entrypoint, "entrypoint", "", "replace the image's entrypoint with `CMD`")
	fs.BoolVarP(&f.tty, "tty", "t", false, "allocate a pseudo-terminal")
	fs.BoolVarP(&f.stdin, "interactive", "i", false, "keep stdin open")
	fs.StringVar(&f.hostname, "hostname", "", "container host `NAME`")
	fs.StringArrayVarP(&f.volumes, "volume", "v", nil, "bind mount `HOST:CONTAINER[:ro]`")
	fs.StringVar(&f.network, "net", "none", "network: none (loopback only) or host")
	fs.StringVar(&f.network, "network", "none", "same as --net")
	fs.StringVarP(&f.memory, "memory", "m", "", "memory limit (`SIZE` with unit b, k, m, g)")
	fs.Float64Var(&f.cpus, "cpus", 0, "CPU quota in `CORES` (e.g. 0.5)")
	fs.Uint64Var(&f.cpuShares, "cpu-shares", 0, "relative CPU `WEIGHT` (docker's scale, default 1024)")
	fs.Int64Var(&f.pidsLimit, "pids-limit", 0, "most processes at once (`N`)")
	fs.StringArrayVar(&f.readBps, "device-read-bps", nil, "read rate limit `DEV:RATE` (e.g. /dev/sda:1mb)")
	fs.StringArrayVar(&f.writeBps, "device-write-bps", nil, "write rate limit `DEV:RATE`")
	fs.BoolVar(&f.readOnly, "read-only", false, "mount the root filesystem read-only (no writable layer)")
	fs.BoolVar(&f.noPivot, "no-pivot", false, "enter the root with MS_MOVE and chroot instead of pivot_root (runc's --no-pivot; for initramfs roots)")
	fs.StringVar(&f.keep, "keep", "", "keep the run's writable layer in `DIR`")
	fs.BoolVar(&f.stats, "stats", false, "print peak memory and CPU time on stderr when the run ends")
	fs.StringVar(&f.pull, "pull", "missing", "pull the image first: missing, always or never")
	fs.StringVar(&f.platform, "platform", "", "`os/arch[/variant]` to run (default: the host's)")
	fs.BoolVar(&f.rm, "rm", false, "accepted for docker compatibility; runs are always removed")
}

// parseNetwork accepts docker's spellings of the two supported modes.
func parseNetwork(s string) (string, error) {
	switch s {
	case "none", "":
		return "none", nil
	case "host":
		return "host", nil
	}
	return "", fmt.Errorf("invalid --net %q (want none or host)", s)
}

// limits turns the resource flags into run.Limits, with docker's units.
func (f *runFlags) limits() (run.Limits, error) {
	l := run.Limits{CPUs: f.cpus, CPUShares: f.cpuShares, PidsLimit: f.pidsLimit}
	if f.cpus < 0 {
		return l, fmt.Errorf("invalid --cpus %v: must not be negative", f.cpus)
	}
	if f.memory != "" {
		n, err := parseBytes(f.memory)
		if err != nil {
			return l, fmt.Errorf("--memory: %w", err)
		}
		l.MemoryBytes = n
	}
	for _, spec := range []struct {
		vals []string
		dst  *[]run.DeviceRate
	}{{f.readBps, &l.DeviceReadBps}, {f.writeBps, &l.DeviceWriteBps}} {
		for _, v := range spec.vals {
			d, err := parseDeviceRate(v)
			if err != nil {
				return l, err
			}
			*spec.dst = append(*spec.dst, d)
		}
	}
	return l, nil
}
