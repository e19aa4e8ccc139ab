package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgrun/imgrun/internal/testreg"
)

// layerDigests returns the layer digests of a cached image, from inspect --manifest.
func layerDigests(t *testing.T, root, ref string) []string {
	t.Helper()
	r := imgrun(t, root, "inspect", "--manifest", ref)
	var m struct {
		Layers []struct {
			Digest string `json:"digest"`
		} `json:"layers"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
		t.Fatalf("inspect --manifest: %v", err)
	}
	var ds []string
	for _, l := range m.Layers {
		ds = append(ds, l.Digest)
	}
	return ds
}

func blobPath(root, d string) string {
	return filepath.Join(root, "oci", "blobs", "sha256", strings.TrimPrefix(d, "sha256:"))
}

func TestVerifyRemovesCorruptBlobs(t *testing.T) {
	reg, ref := testRegistry(t)
	root := t.TempDir()
	if r := imgrun(t, root, "-q", "pull", ref); r.code != 0 {
		t.Fatalf("pull: %s", r.stderr)
	}
	if r := imgrun(t, root, "verify"); r.code != 0 || r.stderr != "" {
		t.Fatalf("verify of a clean cache: code %d, stderr %q", r.code, r.stderr)
	}

	bad := layerDigests(t, root, ref)[0]
	p := blobPath(root, bad)
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("not the layer"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := imgrun(t, root, "verify")
	wantOneErrorLine(t, r, exitVerifyFound)
	if !strings.Contains(r.stdout, bad) {
		t.Errorf("verify stdout %q does not name the corrupt blob %s", r.stdout, bad)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("corrupt blob still in the store: %v", err)
	}

	// The next use (unpack, --pull=missing) sees the image is incomplete and fetches
	// exactly the removed blob again; then the cache is clean.
	before := reg.Counter.Count("GET", testreg.KindBlob)
	if r := imgrun(t, root, "-q", "unpack", ref, filepath.Join(t.TempDir(), "rootfs")); r.code != 0 {
		t.Fatalf("unpack after verify: %s", r.stderr)
	}
	if got := reg.Counter.Count("GET", testreg.KindBlob) - before; got != 1 {
		t.Errorf("unpack after verify sent %d blob GETs, want 1", got)
	}
	if r := imgrun(t, root, "verify"); r.code != 0 {
		t.Errorf("verify after re-pull: code %d, stderr %q", r.code, r.stderr)
	}
}

func TestGCFreesUnreferencedBlobs(t *testing.T) {
	_, ref := testRegistry(t)
	root := t.TempDir()
	if r := imgrun(t, root, "-q", "pull", ref); r.code != 0 {
		t.Fatalf("pull: %s", r.stderr)
	}
	layers := layerDigests(t, root, ref)

	// While the image is cached, gc keeps everything.
	if r := imgrun(t, root, "gc"); r.code != 0 || !strings.HasPrefix(r.stdout, "removed 0 blobs") {
		t.Errorf("gc with everything referenced: code %d, stdout %q", r.code, r.stdout)
	}
	for _, d := range layers {
		if _, err := os.Stat(blobPath(root, d)); err != nil {
			t.Errorf("gc removed a referenced blob: %v", err)
		}
	}

	if r := imgrun(t, root, "rmi", ref); r.code != 0 {
		t.Fatalf("rmi: %s", r.stderr)
	}
	r := imgrun(t, root, "gc")
	if r.code != 0 || strings.HasPrefix(r.stdout, "removed 0 blobs") || !strings.Contains(r.stdout, "freed") {
		t.Errorf("gc after rmi: code %d, stdout %q", r.code, r.stdout)
	}
	for _, d := range layers {
		if _, err := os.Stat(blobPath(root, d)); !os.IsNotExist(err) {
			t.Errorf("gc kept unreferenced blob %s: %v", d, err)
		}
	}
}
