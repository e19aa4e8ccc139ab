//go:build integration

package rootfs_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/imgrun/imgrun/internal/testimage"
	"github.com/imgrun/imgrun/internal/testutil"
	"github.com/imgrun/imgrun/pkg/rootfs"
)

// gzFileLayer is a gzip layer file on disk.
type gzFileLayer string

func (g gzFileLayer) Uncompressed(context.Context) (io.ReadCloser, error) {
	f, err := os.Open(string(g))
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, f}, nil
}

// TestExportDebian compares Export with Flatten (and with umoci unpack when it is installed)
// on a realistic image: a debootstrap bookworm base (tens of thousands of entries, hard
// links, setuid files, capabilities), the nodejs layer when cached, and the testimage layers
// that delete, replace and hide parts of it.
func TestExportDebian(t *testing.T) {
	testutil.RequiresRoot(t)
	tars := []string{testimage.DebianBaseLayer(t)}
	if p := filepath.Join(testimage.DebianCacheDir(), "debian-bookworm-nodejs-v2.tar.gz"); fileExists(p) {
		tars = append(tars, p)
	}
	var layers []rootfs.Layer
	for _, p := range tars {
		layers = append(layers, gzFileLayer(p))
	}
	for _, es := range testimage.DebianLayers() {
		layers = append(layers, memLayer(testimage.TarBytes(t, es...)))
	}

	start := time.Now()
	out, err := os.Create(filepath.Join(t.TempDir(), "export.tar"))
	if err != nil {
		t.Fatal(err)
	}
	if err := rootfs.Export(t.Context(), out, layers); err != nil {
		t.Fatal(err)
	}
	t.Logf("Export of %d layers: %v", len(layers), time.Since(start))
	if _, err := out.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(out)
	if err != nil {
		t.Fatal(err)
	}
	exported := tarTree(t, data)

	start = time.Now()
	dir := filepath.Join(t.TempDir(), "rootfs")
	if err := rootfs.Flatten(t.Context(), dir, layers); err != nil {
		t.Fatal(err)
	}
	t.Logf("Flatten: %v; %d paths", time.Since(start), len(exported))
	if d := diffMaps(exported, diskTree(t, dir)); d != "" {
		t.Errorf("export differs from Flatten:\n%.4000s", d)
	}
	for _, p := range []string{"usr/bin/perl", "etc/motd", "usr/share/man"} {
		if _, ok := exported[p]; ok {
			t.Errorf("%s was deleted by a layer but is exported", p)
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
