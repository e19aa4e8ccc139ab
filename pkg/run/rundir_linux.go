package run

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// A run keeps nothing on the host's disk. Its init mounts a tmpfs over Spec.StateDir, in the
// run's own mount namespace only (the host and other runs still see the plain directory), and
// keeps there everything the run writes:
//
//	upper/ work/  the overlay's writable layer (KeepDir/upper and KeepDir/work with KeepDir)
//	root/         the run's root, pivoted into
//	hosts hostname resolv.conf   bound over the rootfs's /etc files
//
// When the run's last process exits the kernel drops the namespace with its mounts and data,
// so even an imgrun killed with SIGKILL leaves no mount, layer or directory behind (only its
// cgroup, which the next run with limits removes). Writes are memory, charged to the run's
// cgroup; starting a run costs no disk metadata operation, which under I/O load costs tens of
// milliseconds.

type runDir struct {
	id          string
	dir         string // where the init mounts its tmpfs
	upper, work string // set only with KeepDir
	ownState    string // a private StateDir to remove afterwards
}

func newRunID() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b[:])
}

// createRunDir prepares the run's directories and fills s.Hostname when it is empty.
func createRunDir(s *Spec) (_ *runDir, err error) {
	rd := &runDir{id: newRunID()}
	if s.Hostname == "" {
		if s.Network == NetworkHost {
			s.Hostname, _ = os.Hostname()
		}
		if s.Hostname == "" {
			s.Hostname = rd.id[:12] // as docker names a container's host
		}
	}
	defer func() {
		if err != nil {
			rd.remove()
		}
	}()
	if s.StateDir == "" {
		if rd.dir, err = os.MkdirTemp("", "imgrun-run-"); err != nil {
			return rd, fmt.Errorf("run dir: %w", err)
		}
		rd.ownState = rd.dir
	} else {
		if rd.dir, err = filepath.Abs(s.StateDir); err != nil {
			return rd, fmt.Errorf("run dir: %w", err)
		}
		if err := os.MkdirAll(rd.dir, 0o700); err != nil {
			return rd, fmt.Errorf("run dir: %w", err)
		}
		// The run's tmpfs hides what is below StateDir from the init.
		hidden := map[string]string{"rootfs": s.Rootfs, "keep dir": s.KeepDir}
		for i, l := range s.Lowers {
			hidden[fmt.Sprintf("lower layer %d", i+1)] = l
		}
		for i, m := range s.Mounts {
			hidden[fmt.Sprintf("mount %d", i+1)] = m.Source
		}
		for what, p := range hidden {
			if p != "" && within(rd.dir, p) {
				return rd, fmt.Errorf("%w: %s %s is inside the state dir %s", ErrBadSpec, what, p, rd.dir)
			}
		}
	}
	if s.KeepDir != "" {
		keep, err := filepath.Abs(s.KeepDir)
		if err != nil {
			return rd, fmt.Errorf("keep dir: %w", err)
		}
		rd.upper, rd.work = filepath.Join(keep, "upper"), filepath.Join(keep, "work")
		for _, d := range []string{rd.upper, rd.work} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return rd, fmt.Errorf("keep dir: %w", err)
			}
		}
	}
	return rd, nil
}

// within reports whether p is dir or below it (lexically, after making p absolute).
func within(dir, p string) bool {
	abs, err := filepath.Abs(p)
	if err != nil {
		return false
	}
	return abs == dir || strings.HasPrefix(abs, dir+string(filepath.Separator))
}

// remove deletes the overlay work dir of a kept layer and a private state dir.
func (rd *runDir) remove() error {
	var errs []error
	if rd.work != "" {
		errs = append(errs, removeTree(rd.work))
	}
	if rd.ownState != "" {
		errs = append(errs, removeTree(rd.ownState))
	}
	return errors.Join(errs...)
}

// removeTree is os.RemoveAll that also gets through directories left without write or search
// permission (an overlay work dir, or a layer written by a rootless run).
func removeTree(dir string) error {
	err := os.RemoveAll(dir)
	if err == nil || !errors.Is(err, fs.ErrPermission) {
		return err
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if (d != nil && d.IsDir()) || (err != nil && errors.Is(err, fs.ErrPermission)) {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}
