package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"testing"

	"github.com/imgrun/imgrun/internal/tartest"
)

// bytesLayer is a layer whose uncompressed tar is in memory.
type bytesLayer []byte

func (b bytesLayer) Uncompressed(context.Context) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(b)), nil
}

// safeExportName reports why an exported entry name (or hard link target) is not a safe,
// clean, relative path without whiteout components; "" if it is.
func safeExportName(name string) string {
	n := strings.TrimSuffix(name, "/")
	switch {
	case n == "" || n == ".":
		return "names the root"
	case strings.IndexByte(n, 0) >= 0:
		return "contains NUL"
	case strings.HasPrefix(n, "/"):
		return "is absolute"
	case path.Clean(n) != n:
		return "is not clean"
	}
	for c := range strings.SplitSeq(n, "/") {
		switch {
		case c == "..":
			return "climbs out"
		case strings.HasPrefix(c, WhiteoutPrefix):
			return "has a whiteout component"
		}
	}
	return ""
}

// checkExportSafe reads an exported tar and reports every entry whose name or hard link
// target is unsafe.
func checkExportSafe(t *testing.T, data []byte) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("read export: %v", err)
		}
		if why := safeExportName(h.Name); why != "" {
			t.Errorf("exported name %q %s", h.Name, why)
		}
		if h.Typeflag == tar.TypeLink {
			if why := safeExportName(h.Linkname); why != "" {
				t.Errorf("exported hard link %q to %q: target %s", h.Name, h.Linkname, why)
			}
		}
	}
}

// TestExportHostile runs every layer set of testdata/hostile through Export: it must either
// fail with an *EntryError or write only safe, relative, clean names without whiteouts. Names
// Apply refuses as unsafe, Export refuses too.
func TestExportHostile(t *testing.T) {
	for _, c := range hostileCases {
		t.Run(c.name, func(t *testing.T) {
			var layers []Layer
			for _, data := range hostileLayers(t, c) {
				layers = append(layers, bytesLayer(data))
			}
			var buf bytes.Buffer
			err := Export(t.Context(), &buf, layers)
			// What Apply says about the same layers, in a scratch root.
			root := t.TempDir()
			var aerr error
			for _, l := range layers {
				if aerr = Apply(t.Context(), root, bytes.NewReader(l.(bytesLayer))); aerr != nil {
					break
				}
			}
			if errors.Is(aerr, ErrUnsafePath) && !errors.Is(err, ErrUnsafePath) {
				t.Errorf("Apply refused an unsafe name (%v) but Export gave %v", aerr, err)
			}
			if err != nil {
				var ee *EntryError
				if !errors.As(err, &ee) {
					t.Fatalf("Export: %v, want an *EntryError", err)
				}
				t.Logf("Export: %v", err)
				return
			}
			checkExportSafe(t, buf.Bytes())
		})
	}
}

// TestExportRejectsUnsafeNames checks that the names Apply rejects fail Export too, as entry
// names, whiteouts and hard link targets.
func TestExportRejectsUnsafeNames(t *testing.T) {
	for _, name := range []string{"", "..", "../x", "a/../../x", "/../x", "a/..", "a/.", ".wh..", ".wh...",
		"d/.wh..", ".wh.", "../.wh.x", "a/.wh.b/c", "../" + OpaqueWhiteout} {
		// (A NUL cannot reach Export: archive/tar neither writes nor reads one in a name.)
		t.Run(fmt.Sprintf("%q", name), func(t *testing.T) {
			err := Export(t.Context(), io.Discard, []Layer{bytesLayer(tartest.Tar(file(name, "x")))})
			if !errors.Is(err, ErrUnsafePath) {
				t.Errorf("entry: %v, want ErrUnsafePath", err)
			}
			if name == "" || strings.Contains(name, WhiteoutPrefix) {
				return
			}
			err = Export(t.Context(), io.Discard, []Layer{bytesLayer(tartest.Tar(file("a", "a"), link("h", name)))})
			if !errors.Is(err, ErrUnsafePath) {
				t.Errorf("link target: %v, want ErrUnsafePath", err)
			}
		})
	}
}
