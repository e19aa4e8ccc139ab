package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgrun/imgrun/internal/testimage"
	"github.com/imgrun/imgrun/internal/testreg"
	"github.com/imgrun/imgrun/internal/testutil"
)

// TestRunEndToEnd runs a busybox image through the CLI: pull on first use, the command's
// exit status and output, flags after the image going to the command, docker's 127, and a
// cached image starting without any registry request. The launcher itself is tested in
// pkg/run; this checks the wiring.
func TestRunEndToEnd(t *testing.T) {
	testutil.RequiresRoot(t)
	reg := testreg.New(t)
	reg.Push(t, "library/busybox:1", testimage.Busybox(t))
	ref := reg.Ref("library/busybox:1")
	root := t.TempDir()

	r := imgrun(t, root, "-q", ref, "sh", "-c", "echo hello; exit 42")
	if r.code != 42 || r.stdout != "hello\n" || r.stderr != "" {
		t.Fatalf("shorthand run: code %d, stdout %q, stderr %q; want 42, hello, nothing", r.code, r.stdout, r.stderr)
	}

	before := len(reg.Counter.Requests())
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
	}{
		{"flags after the image are the command's", []string{ref, "echo", "-n", "x"}, 0, "x"},
		{"run subcommand with docker flags", []string{"run", "-e", "A=1", "-w", "/tmp", "--rm", ref, "sh", "-c", "echo $A $(pwd)"}, 0, "1 /tmp\n"},
		{"--entrypoint", []string{"run", "--entrypoint", "echo", ref, "a", "b"}, 0, "a b\n"},
		{"image's own command status", []string{ref, "false"}, 1, ""},
		{"--pull=never on a cached image", []string{"run", "--pull=never", ref, "true"}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := imgrun(t, root, tt.args...)
			if r.code != tt.code || r.stdout != tt.stdout || r.stderr != "" {
				t.Errorf("code %d, stdout %q, stderr %q; want %d, %q, nothing", r.code, r.stdout, r.stderr, tt.code, tt.stdout)
			}
		})
	}
	if n := len(reg.Counter.Requests()) - before; n != 0 {
		t.Errorf("runs of a cached image sent %d registry requests, want 0", n)
	}

	r = imgrun(t, root, "run", "--stats", "--memory", "64m", ref, "true")
	if ls := lines(r.stderr); r.code != 0 || len(ls) != 1 || !strings.HasPrefix(ls[0], "imgrun: stats: peak memory ") {
		t.Errorf("--stats: code %d, stderr %q; want one stats line", r.code, r.stderr)
	}

	keep := t.TempDir()
	if r := imgrun(t, root, "run", "--keep", keep, ref, "sh", "-c", "echo kept > /made-in-run"); r.code != 0 {
		t.Errorf("--keep run: code %d, stderr %q", r.code, r.stderr)
	}
	if b, err := os.ReadFile(filepath.Join(keep, "upper", "made-in-run")); err != nil || string(b) != "kept\n" {
		t.Errorf("--keep: upper/made-in-run = %q, %v", b, err)
	}

	r = imgrun(t, root, ref, "nosuch-command")
	wantOneErrorLine(t, r, exitNotFound)
	if !strings.Contains(r.stderr, "nosuch-command") {
		t.Errorf("stderr %q does not name the missing command", r.stderr)
	}

	// As root a run's image is a stack of layer snapshots under ROOT/snapshots (busybox: one
	// layer), kept until its image is gone and gc runs; no flat tree is made.
	if snaps, _ := os.ReadDir(filepath.Join(root, "snapshots")); len(snaps) != 1 {
		t.Errorf("snapshot cache holds %d entries, want 1", len(snaps))
	}
	if trees, _ := os.ReadDir(filepath.Join(root, "rootfs")); len(trees) != 0 {
		t.Errorf("rootfs cache holds %d trees, want 0", len(trees))
	}
	if r := imgrun(t, root, "rmi", ref); r.code != 0 {
		t.Fatalf("rmi: %s", r.stderr)
	}
	if r := imgrun(t, root, "gc"); r.code != 0 || !strings.Contains(r.stdout, "removed 0 unpacked trees and 1 layer snapshots") {
		t.Errorf("gc: code %d, stdout %q", r.code, r.stdout)
	}
	if snaps, _ := os.ReadDir(filepath.Join(root, "snapshots")); len(snaps) != 0 {
		t.Errorf("snapshot cache holds %d entries after rmi and gc, want 0", len(snaps))
	}
}

// TestRunBadFlags: flag errors are imgrun's (125, one line) and are found before any pull.
func TestRunBadFlags(t *testing.T) {
	reg, ref := testRegistry(t)
	tests := [][]string{
		{"run", "--memory", "lots", ref},
		{"run", "--net", "bridge", ref},
		{"run", "--pull", "sometimes", ref},
		{"run", "--device-read-bps", "/dev/null:1mb", ref},
		{"run", "-v", "relative:/data", ref},
		{"run", "--env-file", "/nonexistent/env", ref},
		{"run", "--cpus", "-1", ref},
		{"run", "--platform", "linux", ref},
		{"run", "--bogus", ref},
		{"run"},
		{"--memory", "lots", ref}, // a run flag first also means run
	}
	before := len(reg.Counter.Requests())
	root := t.TempDir()
	for _, args := range tests {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			wantOneErrorLine(t, imgrun(t, root, args...), exitFailed)
		})
	}
	if n := len(reg.Counter.Requests()) - before; n != 0 {
		t.Errorf("bad flags sent %d registry requests, want 0", n)
	}
}
