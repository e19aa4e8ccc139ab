package rootfs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/imgrun/imgrun/internal/tartest"
	"github.com/imgrun/imgrun/pkg/rootfs"
)

// genLayer is a layer of n small files generated while it is read, so that a hostile-sized
// layer (10⁷ entries) costs nothing unless the reader consumes it all. written counts the
// entries produced.
type genLayer struct {
	t       testing.TB
	n       int
	name    func(i int) string
	written *atomic.Int64
}

func (g genLayer) Uncompressed(context.Context) (io.ReadCloser, error) {
	pr, pw := io.Pipe()
	g.t.Cleanup(func() { pr.CloseWithError(errors.New("test over")) })
	go func() {
		tw := tar.NewWriter(pw)
		for i := range g.n {
			h := &tar.Header{Typeflag: tar.TypeReg, Name: g.name(i), Mode: 0o644, Format: tar.FormatPAX}
			if err := tw.WriteHeader(h); err != nil {
				pw.CloseWithError(err)
				return
			}
			g.written.Add(1)
		}
		pw.CloseWithError(tw.Close())
	}()
	return pr, nil
}

// TestExportLimitsHugeLayer checks that a layer of 10⁷ entries fails Export with ErrLimit as
// soon as it passes MaxEntries, instead of growing Export's path map without bound.
func TestExportLimitsHugeLayer(t *testing.T) {
	tests := []struct {
		name string
		path func(i int) string
	}{
		{"flat", func(i int) string { return fmt.Sprintf("f%d", i) }},
		// Every entry implies 60 new parent directories, which Export must remember too.
		{"deep", func(i int) string { return fmt.Sprintf("d%d/", i) + strings.Repeat("x/", 60) + "f" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var written atomic.Int64
			layers := []rootfs.Layer{memLayer(tartest.Tar(tFile("lower", "l"))), genLayer{t, 10_000_000, tc.path, &written}}
			err := rootfs.Export(t.Context(), io.Discard, layers, rootfs.WithLimits(rootfs.Limits{MaxEntries: 1000}))
			if !errors.Is(err, rootfs.ErrLimit) {
				t.Fatalf("Export: %v, want ErrLimit", err)
			}
			var ee *rootfs.EntryError
			if !errors.As(err, &ee) {
				t.Errorf("Export: %v, want an *EntryError", err)
			}
			// The generator runs ahead by at most the pipe's and the reader's buffers.
			if n := written.Load(); n > 100_000 {
				t.Errorf("the layer was read to %d entries after the limit", n)
			}
		})
	}
}

// TestExportLimits checks each limit on Export against Apply's: the same layer over the same
// limit fails both with ErrLimit, and is accepted by both without it.
func TestExportLimits(t *testing.T) {
	big := strings.Repeat("b", 200)
	tests := []struct {
		name  string
		layer tl
		lim   rootfs.Limits
	}{
		{"entries", tl{tFile("a", "a"), tFile("b", "b"), tFile("c", "c")}, rootfs.Limits{MaxEntries: 2}},
		{"path length", tl{tFile(strings.Repeat("n", 100), "a")}, rootfs.Limits{MaxPathLen: 64}},
		{"link target length", tl{tFile("a", "a"), tSymlink("s", strings.Repeat("t", 100))}, rootfs.Limits{MaxPathLen: 64}},
		{"path depth", tl{tFile("a/b/c/d/e", "a")}, rootfs.Limits{MaxPathDepth: 4}},
		{"file size", tl{tFile("a", big)}, rootfs.Limits{MaxFileSize: 100}},
		{"total bytes", tl{tFile("a", big), tFile("b", big)}, rootfs.Limits{MaxTotalBytes: 300}},
		{"xattr size", tl{tDir("d", tartest.Xattr("user.big", big))}, rootfs.Limits{MaxXattrSize: 100}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			layers := memLayers(tc.layer)
			err := rootfs.Export(t.Context(), io.Discard, layers, rootfs.WithLimits(tc.lim))
			if !errors.Is(err, rootfs.ErrLimit) {
				t.Errorf("Export: %v, want ErrLimit", err)
			}
			aerr := rootfs.Apply(t.Context(), t.TempDir(), bytes.NewReader(tartest.Tar(tc.layer...)), rootfs.WithLimits(tc.lim))
			if !errors.Is(aerr, rootfs.ErrLimit) {
				t.Errorf("Apply: %v, want ErrLimit", aerr)
			}
			if err := rootfs.Export(t.Context(), io.Discard, layers); err != nil {
				t.Errorf("Export with the default limits: %v", err)
			}
		})
	}
	// MaxEntries is per layer, as in Apply: two layers of 3 pass a limit of 3.
	layers := memLayers(tl{tFile("a", "a"), tFile("b", "b"), tFile("c", "c")}, tl{tFile("d", "d"), tFile("e", "e"), tFile("f", "f")})
	if err := rootfs.Export(t.Context(), io.Discard, layers, rootfs.WithLimits(rootfs.Limits{MaxEntries: 3})); err != nil {
		t.Errorf("Export of two layers of 3 entries with MaxEntries 3: %v", err)
	}
	if err := rootfs.Export(t.Context(), io.Discard, layers, rootfs.WithLimits(rootfs.Limits{MaxEntries: -1})); err == nil {
		t.Error("Export accepted a negative limit")
	}
}
