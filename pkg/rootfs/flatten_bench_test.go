package rootfs_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/imgrun/imgrun/pkg/rootfs"
)

// BenchmarkFlatten flattens the generated image of BenchmarkExport into a new directory on
// the test's temporary filesystem (the removal of the tree is not timed).
func BenchmarkFlatten(b *testing.B) {
	layers, total := benchOnce()
	b.SetBytes(total)
	parent := b.TempDir()
	for b.Loop() {
		dir := filepath.Join(parent, "rootfs")
		if err := rootfs.Flatten(b.Context(), dir, layers); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
