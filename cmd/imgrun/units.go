package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/imgrun/imgrun/pkg/run"
)

// parseBytes parses a size the way docker's --memory does: a number (decimals allowed)
// with an optional binary unit b, k, m, g, t or p, optionally followed by "b" or "ib",
// in any case: "80M", "80mb", "1.5g", "1048576".
func parseBytes(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "b")
	t = strings.TrimSuffix(t, "i")
	mult := float64(1)
	if n := len(t); n > 0 {
		if i := strings.IndexByte("kmgtp", t[n-1]); i >= 0 {
			mult = math.Pow(1024, float64(i+1))
			t = strings.TrimSpace(t[:n-1])
		}
	}
	if t == "" || strings.ContainsAny(t, "+-eExXpP_") {
		return 0, fmt.Errorf("invalid size %q: want a number with an optional unit b, k, m, g (e.g. 80m)", s)
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("invalid size %q: want a number with an optional unit b, k, m, g (e.g. 80m)", s)
	}
	b := v * mult
	if b >= math.MaxInt64 {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return int64(b), nil
}

// parseDeviceRate parses DEV:RATE as docker does ("/dev/sda:1mb") and finds the block
// device's major:minor numbers, which the cgroup files want.
func parseDeviceRate(s string) (run.DeviceRate, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return run.DeviceRate{}, fmt.Errorf("invalid device rate %q: want DEVICE:RATE (e.g. /dev/sda:1mb)", s)
	}
	dev, rate := s[:i], s[i+1:]
	if !strings.HasPrefix(dev, "/dev/") || filepath.Clean(dev) != dev {
		return run.DeviceRate{}, fmt.Errorf("invalid device rate %q: the device must be a /dev/ path", s)
	}
	n, err := parseBytes(rate)
	if err != nil {
		return run.DeviceRate{}, fmt.Errorf("invalid device rate %q: %w", s, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return run.DeviceRate{}, fmt.Errorf("invalid device rate %q: %w", s, &os.PathError{Op: "stat", Path: dev, Err: err})
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return run.DeviceRate{}, fmt.Errorf("invalid device rate %q: %s is not a block device", s, dev)
	}
	return run.DeviceRate{Path: dev, Major: unix.Major(st.Rdev), Minor: unix.Minor(st.Rdev), BytesPerSec: uint64(n)}, nil
}
