package layers

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imgrun/imgrun/internal/testreg"
)

// smallFS mounts a tmpfs of size bytes and returns its path; the test is skipped when
// mounting is not allowed (not root, no CAP_SYS_ADMIN).
func smallFS(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// TestPullDiskFull: a pull into a full filesystem fails with a *DiskFullError naming the
// file, leaves no blob or partial file behind, and succeeds once space is freed.
func TestPullDiskFull(t *testing.T) {
	fs := smallFS(t, "4m")
	reg := testreg.New(t)
	img := testImage(t, "linux/amd64", 90, 1536<<10)
	reg.Push(t, "app:1", img)
	big, _ := largestLayer(t, img)

	s, err := Open(filepath.Join(fs, "root"))
	if err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(fs, "filler")
	if err := os.WriteFile(filler, make([]byte, 3<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = s.Pull(t.Context(), source(t, reg.Host, "app:1"), PullOptions{Platform: amd64})
	var full *DiskFullError
	if !errors.Is(err, ErrNoSpace) || !errors.As(err, &full) || !strings.HasPrefix(full.Path, s.Root()) {
		t.Fatalf("Pull on a full disk = %v, want a *DiskFullError naming a file under %s", err, s.Root())
	}
	t.Logf("error: %v", err)
	if s.Has(digestOf(big)) {
		t.Error("the layer is in blobs/")
	}
	if names := dirNames(t, s.ingest); len(names) != 0 {
		t.Errorf("ingest/ keeps %v", names)
	}
	if recs, _ := s.Images(t.Context()); len(recs) != 0 {
		t.Errorf("index.json lists %v", recs)
	}

	os.Remove(filler)
	if _, err := s.Pull(t.Context(), source(t, reg.Host, "app:1"), PullOptions{Platform: amd64}); err != nil {
		t.Fatalf("Pull after freeing space: %v", err)
	}
	if rep, err := s.Verify(t.Context()); err != nil || len(rep.Corrupt)+len(rep.Missing) != 0 {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
}
