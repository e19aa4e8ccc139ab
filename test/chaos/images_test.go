//go:build chaos

package chaos

import (
	"archive/tar"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/imgrun/imgrun/internal/testimage"
	"github.com/imgrun/imgrun/internal/testreg"
)

// The chaos images: busybox plus layers of a few MiB of incompressible bytes, so that pull,
// unpack and export take long enough to be killed half-way. A and B share the busybox layer
// and layer 1, as images built FROM one base do.
//
//	A = busybox + L1 (big file + many small files) + L2 (big file, a whiteout)
//	B = busybox + L1 + L3 (big file)
var (
	imagesOnce sync.Once
	imageA     v1.Image
	imageB     v1.Image
)

// bigSize is the size of each layer's incompressible file.
func bigSize() int { return pick(3, 8) << 20 }

// smallFiles is how many small files layer 1 holds (many entries make unpack slower).
const smallFiles = 400

func chaosImages(t testing.TB) (a, b v1.Image) {
	t.Helper()
	imagesOnce.Do(func() {
		bb := testimage.OCILayer(t, testimage.BusyboxEntries(t)...)
		l1 := []testimage.Entry{testimage.Dir("chaos"), testimage.Dir("chaos/small"), randomFile("chaos/l1.bin", 1, bigSize())}
		for i := range smallFiles {
			l1 = append(l1, testimage.File(fmt.Sprintf("chaos/small/f%03d", i), fmt.Sprintf("small file %d\n", i)))
		}
		l2 := []testimage.Entry{randomFile("chaos/l2.bin", 2, bigSize()), testimage.Whiteout("chaos/small/f000")}
		l3 := []testimage.Entry{randomFile("chaos/l3.bin", 3, bigSize())}
		L1, L2, L3 := testimage.Layer(t, l1...), testimage.Layer(t, l2...), testimage.Layer(t, l3...)
		cfg := v1.Config{Env: []string{"PATH=" + testimage.DefaultPath}, Cmd: []string{"sh"}}
		imageA = testimage.Image(t, cfg, false, bb, L1, L2)
		imageB = testimage.Image(t, cfg, false, bb, L1, L3)
	})
	if imageA == nil {
		t.Fatal("chaos images could not be built")
	}
	return imageA, imageB
}

// randomFile is a file of n deterministic pseudo-random bytes.
func randomFile(name string, seed uint64, n int) testimage.Entry {
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed)}))
	data := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			data[i+j] = byte(v >> (8 * j))
		}
	}
	return testimage.Entry{Name: name, Type: tar.TypeReg, Mode: 0o644, Data: data}
}

// chaosRegistry starts a registry holding chaos/a:1 and chaos/b:1 (opts add faults etc.).
func chaosRegistry(t testing.TB, opts ...testreg.Option) *testreg.Registry {
	t.Helper()
	a, b := chaosImages(t)
	reg := testreg.New(t, opts...)
	reg.Push(t, "chaos/a:1", a)
	reg.Push(t, "chaos/b:1", b)
	return reg
}
