package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgrun/imgrun/internal/testreg"
)

func TestUnpack(t *testing.T) {
	_, ref := testRegistry(t)
	root := t.TempDir()
	dir := filepath.Join(t.TempDir(), "rootfs")
	// Not cached yet: unpack pulls (--pull=missing is the default).
	if r := imgrun(t, root, "-q", "unpack", ref, dir); r.code != 0 {
		t.Fatalf("unpack: %s", r.stderr)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "etc", "hello")); err != nil || string(b) != "hello" {
		t.Errorf("etc/hello = %q, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "bin", "tool")); err != nil || fi.Mode().Perm() != 0o755 || fi.Size() != 4096 {
		t.Errorf("bin/tool: %v, %v", fi, err)
	}
	// DIR must be new or empty.
	r := imgrun(t, root, "unpack", ref, dir)
	wantOneErrorLine(t, r, exitFailed)
}

func TestUnpackPullNever(t *testing.T) {
	reg, ref := testRegistry(t)
	dir := filepath.Join(t.TempDir(), "rootfs")
	before := len(reg.Counter.Requests())
	wantOneErrorLine(t, imgrun(t, t.TempDir(), "unpack", "--pull=never", ref, dir), exitFailed)
	if n := len(reg.Counter.Requests()) - before; n != 0 {
		t.Errorf("--pull=never sent %d registry requests", n)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed unpack left %s: %v", dir, err)
	}
}

// tarNames lists a tar's entry names and regular-file contents.
func tarNames(t *testing.T, r io.Reader) map[string]string {
	t.Helper()
	out := map[string]string{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("reading export: %v", err)
		}
		b, _ := io.ReadAll(tr)
		out[strings.TrimPrefix(h.Name, "./")] = string(b)
	}
}

func TestExport(t *testing.T) {
	_, ref := testRegistry(t)
	root := t.TempDir()
	if r := imgrun(t, root, "-q", "pull", ref); r.code != 0 {
		t.Fatalf("pull: %s", r.stderr)
	}

	file := filepath.Join(t.TempDir(), "rootfs.tar")
	if r := imgrun(t, root, "export", ref, "-o", file); r.code != 0 || r.stdout != "" {
		t.Fatalf("export -o FILE: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	fromFile, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if names := tarNames(t, bytes.NewReader(fromFile)); names["etc/hello"] != "hello" || len(names["bin/tool"]) != 4096 {
		t.Errorf("export entries = %v", names)
	}

	// -o - streams the same bytes to stdout.
	r := imgrun(t, root, "export", ref, "-o", "-")
	if r.code != 0 || r.stdout != string(fromFile) {
		t.Errorf("export -o - differs from export -o FILE (code %d, %d vs %d bytes)", r.code, len(r.stdout), len(fromFile))
	}

	wantOneErrorLine(t, imgrun(t, root, "export", ref), exitFailed) // no -o
}

// TestExportFailureLeavesNoFile corrupts a cached layer so that the export fails while
// streaming: neither FILE nor a temporary file may remain.
func TestExportFailureLeavesNoFile(t *testing.T) {
	_, ref := testRegistry(t)
	root := t.TempDir()
	if r := imgrun(t, root, "-q", "pull", ref); r.code != 0 {
		t.Fatalf("pull: %s", r.stderr)
	}
	for _, d := range layerDigests(t, root, ref) {
		p := blobPath(root, d)
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)-5] ^= 0xff // keep the size, break the digest (and the gzip trailer)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := t.TempDir()
	r := imgrun(t, root, "export", ref, "-o", filepath.Join(out, "rootfs.tar"))
	wantOneErrorLine(t, r, exitFailed)
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Errorf("failed export left %v in the output directory", ents)
	}
}

// TestUnpackPullFails: unpack extracts layers while the pull still runs; when a later layer
// cannot be downloaded, unpack fails with the pull's error and leaves no DIR and no
// temporary tree beside it.
func TestUnpackPullFails(t *testing.T) {
	second := testreg.Layer(t, testreg.File{Name: "bin/"}, testreg.File{Name: "bin/tool", Body: "x"})
	d, err := second.Digest()
	if err != nil {
		t.Fatal(err)
	}
	reg := testreg.New(t, testreg.WithFaults(testreg.Fault{Kind: testreg.KindBlob, PathContains: d.Hex, Action: testreg.Status(404)}))
	reg.Push(t, "library/app:1", testreg.Image(t, "linux/amd64",
		testreg.Layer(t, testreg.File{Name: "etc/"}, testreg.File{Name: "etc/hello", Body: "hello"}), second))
	parent := t.TempDir()
	dir := filepath.Join(parent, "rootfs")
	r := imgrun(t, t.TempDir(), "-q", "unpack", reg.Ref("library/app:1"), dir)
	wantOneErrorLine(t, r, exitFailed)
	if !strings.Contains(r.stderr, d.Hex) {
		t.Errorf("error does not name the missing blob: %s", r.stderr)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 0 {
		t.Errorf("failed unpack left %v", ents)
	}
}
