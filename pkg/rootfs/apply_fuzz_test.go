package rootfs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/imgrun/imgrun/internal/tartest"
)

// FuzzApply applies arbitrary bytes as a layer over a small lower tree (with symlinks pointing
// out of the root) and checks that nothing outside the root changed and nothing panicked. It
// also exports the same two layers: Export must fail or write only safe names.
//
//	go test ./pkg/rootfs -run '^$' -fuzz FuzzApply -fuzztime 5m
func FuzzApply(f *testing.F) {
	ents, err := os.ReadDir(filepath.Join("testdata", "hostile"))
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("testdata", "hostile", e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(tartest.Tar(opaque("d"), file("d/n", "n"), wh("f"), link("h", "l/x"), tartest.Fifo("d/p")))
	lower := tartest.Tar(
		dir("d/"), file("d/x", "x"), file("f", "f"), symlink("up", "../victim"), symlink("abs", "/"),
		symlink("l", "d"), dir("ro/", mode(0o555)), file("ro/x", "x"),
	)
	lim := WithLimits(Limits{MaxEntries: 256, MaxTotalBytes: 1 << 20, MaxFileSize: 1 << 20})
	f.Fuzz(func(t *testing.T, data []byte) {
		tmp, root := victimDir(t)
		if err := os.Symlink(filepath.Join(tmp, "victim"), filepath.Join(root, "hostabs")); err != nil {
			t.Fatal(err)
		}
		if err := Apply(t.Context(), root, bytes.NewReader(lower)); err != nil {
			t.Fatal(err)
		}
		before := snapshot(t, tmp, root)
		_ = Apply(t.Context(), root, bytes.NewReader(data), lim)
		assertUnchanged(t, before, snapshot(t, tmp, root))

		var out bytes.Buffer
		if Export(t.Context(), &out, []Layer{bytesLayer(lower), bytesLayer(data)}, lim) == nil {
			checkExportSafe(t, out.Bytes())
		}
	})
}
