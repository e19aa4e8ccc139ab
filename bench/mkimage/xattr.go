package main

import (
	"bytes"
	"time"

	"golang.org/x/sys/unix"
)

// listXattrs returns the names of p's extended attributes (nil when it has none or the
// filesystem keeps none).
func listXattrs(p string) []string {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return nil
	}
	var names []string
	for _, b := range bytes.Split(buf[:n], []byte{0}) {
		if len(b) > 0 {
			names = append(names, string(b))
		}
	}
	return names
}

// xattr returns the value of one extended attribute of p, "" when it is absent.
func xattr(p, name string) string {
	buf := make([]byte, 4096)
	n, err := unix.Lgetxattr(p, name, buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

func timespec(ts unix.Timespec) time.Time {
	return time.Unix(ts.Sec, ts.Nsec).UTC()
}
