package rootfs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/klauspost/compress/gzip"

	"github.com/imgrun/imgrun/internal/tartest"
	"github.com/imgrun/imgrun/pkg/rootfs"
)

// gzLayer is a gzip-compressed layer whose uncompressed sha256 is checked at EOF, like
// pkg/layers' layers: decompression is the CPU work the pipeline overlaps.
type gzLayer struct {
	gz     []byte
	diffID [32]byte
}

func newGzLayer(tarData []byte) gzLayer {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(tarData)
	zw.Close()
	return gzLayer{gz: b.Bytes(), diffID: sha256.Sum256(tarData)}
}

func (g gzLayer) Uncompressed(context.Context) (io.ReadCloser, error) {
	zr, err := gzip.NewReader(bytes.NewReader(g.gz))
	if err != nil {
		return nil, err
	}
	return &verifyReader{r: zr, h: sha256.New(), want: g.diffID}, nil
}

type verifyReader struct {
	r    *gzip.Reader
	h    hash.Hash
	want [32]byte
}

func (v *verifyReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	if err == io.EOF && !bytes.Equal(v.h.Sum(nil), v.want[:]) {
		return n, errors.New("diffID mismatch")
	}
	return n, err
}

func (v *verifyReader) Close() error { return v.r.Close() }

// benchImage is a generated image: nLayers layers of nFiles files each (text-like content
// that gzip compresses about 3x, sizes 1-64 KiB), later layers replacing and deleting
// some files of earlier ones, with directories, symlinks and hard links.
func benchImage(nLayers, nFiles int) (tars [][]byte, total int64) {
	r := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor " +
		"incididunt ut labore et dolore magna aliqua usr lib bin share locale doc x86_64 linux gnu so")
	content := func(n int) string {
		var b strings.Builder
		for b.Len() < n {
			b.WriteString(words[r.IntN(len(words))])
			if r.IntN(8) == 0 {
				fmt.Fprintf(&b, "%x", r.Uint64())
			}
			b.WriteByte(' ')
		}
		return b.String()[:n]
	}
	for l := range nLayers {
		var es []tartest.Entry
		for d := range 20 {
			es = append(es, tartest.Dir(fmt.Sprintf("usr/lib/pkg%02d", d)))
		}
		for i := range nFiles {
			name := fmt.Sprintf("usr/lib/pkg%02d/f%05d", i%20, i+l*nFiles/2) // half overlap the layer below
			size := 1024 + r.IntN(64<<10)
			total += int64(size)
			es = append(es, tartest.File(name, content(size)))
			if i%50 == 0 {
				es = append(es, tartest.Symlink(name+".link", "f0"), tartest.Link(name+".hard", name))
			}
			if l > 0 && i%40 == 0 {
				es = append(es, tartest.Whiteout(fmt.Sprintf("usr/lib/pkg%02d/f%05d", (i+1)%20, i+1+(l-1)*nFiles/2)))
			}
		}
		tars = append(tars, tartest.Tar(es...))
	}
	return tars, total
}

var benchOnce = sync.OnceValues(func() ([]rootfs.Layer, int64) {
	tars, total := benchImage(4, 2000)
	var ls []rootfs.Layer
	for _, t := range tars {
		ls = append(ls, newGzLayer(t))
	}
	return ls, total
})

// BenchmarkExport exports the generated image (4 gzip layers, 8000 files, ~130 MB).
func BenchmarkExport(b *testing.B) {
	layers, total := benchOnce()
	b.SetBytes(total)
	out := devNull(b)
	for b.Loop() {
		if err := rootfs.Export(b.Context(), out, layers); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExportOneLayer exports the bottom layer alone: nothing to decode ahead of the
// writer, so this is the cost of Export's layer queue when it cannot help.
func BenchmarkExportOneLayer(b *testing.B) {
	layers, _ := benchOnce()
	tars, _ := benchImage(1, 2000)
	var total int64
	tr := tar.NewReader(bytes.NewReader(tars[0]))
	for h, err := tr.Next(); err == nil; h, err = tr.Next() {
		total += h.Size
	}
	b.SetBytes(total)
	out := devNull(b)
	for b.Loop() {
		if err := rootfs.Export(b.Context(), out, layers[:1]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExportGGCR is the same export with go-containerregistry's mutate.Extract, which
// crane export runs: the baseline of issue 4.
func BenchmarkExportGGCR(b *testing.B) {
	layers, total := benchOnce()
	img := empty.Image
	for _, l := range layers {
		gz := l.(gzLayer).gz
		tl, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(gz)), nil
		})
		if err != nil {
			b.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, tl); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(total)
	out := devNull(b)
	for b.Loop() {
		rc := mutate.Extract(img)
		if _, err := io.Copy(out, rc); err != nil {
			b.Fatal(err)
		}
		rc.Close()
	}
}

// BenchmarkDecompressOnly reads every layer once, on one core: the floor for one core.
func BenchmarkDecompressOnly(b *testing.B) {
	layers, total := benchOnce()
	b.SetBytes(total)
	for b.Loop() {
		for _, l := range layers {
			rc, err := l.Uncompressed(b.Context())
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, rc); err != nil {
				b.Fatal(err)
			}
			rc.Close()
		}
	}
}

// devNull is an *os.File, like the stdout or file an export goes to, where every Write is a
// system call.
func devNull(b *testing.B) *os.File {
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}
