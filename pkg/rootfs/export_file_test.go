package rootfs_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imgrun/imgrun/internal/tartest"
	"github.com/imgrun/imgrun/pkg/rootfs"
)

// TestExportFile: the file appears only complete; a failed export leaves nothing; a killed
// export's temporary file (unlocked) is removed by the next export to the same path, while
// one being written (locked) is left alone.
func TestExportFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.tar")
	stale := filepath.Join(dir, ".out.tar.imgrun-tmp-killed")
	if err := os.WriteFile(stale, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	live := filepath.Join(dir, ".out.tar.imgrun-tmp-live")
	if err := os.WriteFile(live, []byte("being written"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(live)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}

	ls := memLayers([]tartest.Entry{tartest.Dir("etc"), tartest.File("etc/hello", "hi")})
	if err := rootfs.ExportFile(t.Context(), path, ls); err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := rootfs.Export(t.Context(), &want, ls); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Error("ExportFile wrote something other than Export")
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("exported file: %v, %v; want mode 0644", fi, err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale temporary file still there: %v", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a locked (live) temporary file was removed: %v", err)
	}

	bad := filepath.Join(dir, "bad.tar")
	broken := []rootfs.Layer{badLayer{data: tartest.Tar(tartest.File("x", "y")), err: errDiffID}}
	if err := rootfs.ExportFile(t.Context(), bad, broken); !errors.Is(err, errDiffID) {
		t.Fatalf("ExportFile of a layer with a bad diffID = %v, want errDiffID", err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if n := e.Name(); n != "out.tar" && n != filepath.Base(live) {
			t.Errorf("left behind after a failed export: %s", n)
		}
	}
}
