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
	"time"

	"golang.org/x/sys/unix"
)

// A run's directory, StateDir/<id>, holds:
//
//	lock         flock'ed by the running imgrun for the whole run
//	upper/ work/ the overlay's writable layer (KeepDir/upper and KeepDir/work with KeepDir)
//	root/        where the init mounts the run's root (in its own mount namespace only)
//	hosts hostname resolv.conf   bound over the rootfs's /etc files
//
// It is made as .new-<id> and renamed once locked, so a concurrent cleanup never sees an
// unlocked live run. All mounts of a run live in its private mount namespace and vanish with
// its last process, so a killed imgrun leaves only this directory (and its cgroup), which the
// next Run with the same StateDir removes.

// newDirGrace protects .new-* directories (and lock-less ones) of runs that are being created.
const newDirGrace = time.Minute

type runDir struct {
	id, dir     string
	upper, work string
	keepDir     string
	lock        *os.File
	ownState    string // a private StateDir to remove afterwards
}

func newRunID() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b[:])
}

// createRunDir makes the run's directory under s.StateDir and writes the /etc files. It fills
// s.Hostname when empty.
func createRunDir(s *Spec) (_ *runDir, err error) {
	rd := &runDir{id: newRunID(), keepDir: s.KeepDir}
	if s.Hostname == "" {
		if s.Network == NetworkHost {
			s.Hostname, _ = os.Hostname()
		}
		if s.Hostname == "" {
			s.Hostname = rd.id[:12] // as docker names a container's host
		}
	}
	state := s.StateDir
	if state == "" {
		if state, err = os.MkdirTemp("", "imgrun-run-"); err != nil {
			return nil, fmt.Errorf("run dir: %w", err)
		}
		rd.ownState = state
	} else if err := os.MkdirAll(state, 0o700); err != nil {
		return nil, fmt.Errorf("run dir: %w", err)
	}
	defer func() {
		if err != nil {
			rd.remove()
		}
	}()
	tmp := filepath.Join(state, ".new-"+rd.id)
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return rd, fmt.Errorf("run dir: %w", err)
	}
	rd.dir = tmp
	rd.lock, err = os.OpenFile(filepath.Join(tmp, "lock"), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return rd, fmt.Errorf("run dir: %w", err)
	}
	if err := unix.Flock(int(rd.lock.Fd()), unix.LOCK_EX); err != nil {
		return rd, fmt.Errorf("run dir: lock: %w", err)
	}
	final := filepath.Join(state, rd.id)
	if err := os.Rename(tmp, final); err != nil {
		return rd, fmt.Errorf("run dir: %w", err)
	}
	rd.dir = final

	layer := rd.dir
	if s.KeepDir != "" {
		if layer, err = filepath.Abs(s.KeepDir); err != nil {
			return rd, fmt.Errorf("keep dir: %w", err)
		}
		if err := os.MkdirAll(layer, 0o755); err != nil {
			return rd, fmt.Errorf("keep dir: %w", err)
		}
	}
	rd.upper, rd.work = filepath.Join(layer, "upper"), filepath.Join(layer, "work")
	for _, d := range []string{rd.upper, rd.work, filepath.Join(rd.dir, "root")} {
		if err := os.Mkdir(d, 0o755); err != nil && !(s.KeepDir != "" && errors.Is(err, fs.ErrExist) && d != filepath.Join(rd.dir, "root")) {
			return rd, fmt.Errorf("run dir: %w", err)
		}
	}
	return rd, writeEtcFiles(rd.dir, s)
}

// writeEtcFiles writes the files bound at /etc/hosts, /etc/hostname and /etc/resolv.conf.
// With the host's network they are the host's; otherwise only loopback exists, so there is
// no DNS server to name.
func writeEtcFiles(dir string, s *Spec) error {
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t" + s.Hostname + "\n"
	resolv := "# imgrun: --net none: no network, no DNS\n"
	if s.Network == NetworkHost {
		if b, err := os.ReadFile("/etc/hosts"); err == nil {
			hosts = string(b)
		}
		if b, err := os.ReadFile("/etc/resolv.conf"); err == nil {
			resolv = string(b)
		}
	}
	files := map[string]string{"hosts": hosts, "hostname": s.Hostname + "\n", "resolv.conf": resolv}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("run dir: %w", err)
		}
	}
	return nil
}

// remove deletes the run's directory (and the overlay work dir of a kept layer).
func (rd *runDir) remove() error {
	var errs []error
	if rd.dir != "" {
		errs = append(errs, removeTree(rd.dir))
	}
	if rd.keepDir != "" && rd.work != "" {
		errs = append(errs, removeTree(rd.work))
	}
	if rd.lock != nil {
		rd.lock.Close()
	}
	if rd.ownState != "" {
		errs = append(errs, removeTree(rd.ownState))
	}
	return errors.Join(errs...)
}

// removeTree is os.RemoveAll that also gets through directories a run left without write or
// search permission (a rootless caller owns them but may not list them).
func removeTree(dir string) error {
	err := os.RemoveAll(dir)
	if err == nil || !errors.Is(err, fs.ErrPermission) {
		return err
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if d != nil && d.IsDir() {
			os.Chmod(p, 0o700)
		} else if err != nil && errors.Is(err, fs.ErrPermission) {
			os.Chmod(p, 0o700)
			return nil
		}
		return nil
	})
	return os.RemoveAll(dir)
}

// cleanStale removes the directories that killed runs left in state and reports whether it
// found any. A run directory is stale when its lock can be taken.
func cleanStale(state string) (bool, error) {
	ents, err := os.ReadDir(state)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("clean stale runs: %w", err)
	}
	found := false
	var errs []error
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(state, e.Name())
		if strings.HasPrefix(e.Name(), ".new-") {
			if old(e) {
				found = true
				errs = append(errs, removeTree(dir))
			}
			continue
		}
		lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR, 0)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && old(e) {
				found = true
				errs = append(errs, removeTree(dir))
			}
			continue
		}
		if unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			found = true
			errs = append(errs, removeTree(dir))
		}
		lock.Close()
	}
	return found, errors.Join(errs...)
}

func old(e fs.DirEntry) bool {
	fi, err := e.Info()
	return err == nil && time.Since(fi.ModTime()) > newDirGrace
}
