package testimage_test

import (
	"archive/tar"
	"errors"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/imgrun/imgrun/internal/testimage"
)

// layerNames lists the entry names of each layer of img.
func layerNames(t *testing.T, img v1.Image) []map[string]*tar.Header {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]*tar.Header
	for _, l := range ls {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]*tar.Header{}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("read layer: %v", err)
			}
			m[h.Name] = h
		}
		rc.Close()
		out = append(out, m)
	}
	return out
}

func digest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDeterministic(t *testing.T) {
	for name, build := range map[string]func(testing.TB) v1.Image{
		"busybox": testimage.Busybox,
		"tricky":  testimage.Tricky,
	} {
		t.Run(name, func(t *testing.T) {
			a, b := digest(t, build(t)), digest(t, build(t))
			if a != b {
				t.Fatalf("two builds differ: %s, %s", a, b)
			}
		})
	}
}

func TestBusybox(t *testing.T) {
	img := testimage.Busybox(t)
	layers := layerNames(t, img)
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	l := layers[0]
	if h := l["bin/busybox"]; h == nil || h.Mode&0o111 == 0 || h.Size < 100_000 {
		t.Fatalf("bin/busybox = %+v", h)
	}
	for _, a := range testimage.BusyboxApplets {
		if h := l["bin/"+a]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox" {
			t.Errorf("bin/%s = %+v, want symlink to busybox", a, h)
		}
	}
	if h := l["tmp/"]; h == nil || h.Mode != 0o1777 {
		t.Errorf("tmp = %+v, want mode 1777", h)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || len(cf.RootFS.DiffIDs) != 1 || cf.Config.Cmd[0] != "sh" {
		t.Errorf("config = %+v", cf)
	}
}

func TestDebian(t *testing.T) {
	if testing.Short() {
		t.Skip("builds or reads the debootstrap cache")
	}
	img := testimage.Debian(t)
	layers := layerNames(t, img)
	if len(layers) != 3 {
		t.Fatalf("%d layers, want 3", len(layers))
	}
	base := layers[0]
	for _, p := range []string{"usr/bin/bash", "etc/os-release", "usr/share/man/", "usr/share/locale/", "var/lib/apt/lists/", "srv/"} {
		if base[p] == nil {
			t.Errorf("base layer lacks %s", p)
		}
	}
	if h := base["bin"]; h == nil || h.Typeflag != tar.TypeSymlink {
		t.Errorf("bin = %+v, want the merged-/usr symlink", h)
	}
	if h := base["usr/bin/perl5.36.0"]; h == nil || h.Typeflag != tar.TypeLink || h.Linkname != "usr/bin/perl" {
		t.Errorf("usr/bin/perl5.36.0 = %+v, want a hardlink to usr/bin/perl", h)
	}
	for p := range base {
		if len(p) > 4 && p[:4] == "dev/" && p != "dev/" {
			t.Errorf("base layer has %s; /dev must be empty", p)
		}
	}
	if layers[1]["usr/share/doc/.wh..wh..opq"] == nil || layers[2]["usr/share/.wh.man"] == nil {
		t.Errorf("layers 2 and 3 lack their whiteouts")
	}
	if a, b := digest(t, img), digest(t, testimage.Debian(t)); a != b {
		t.Errorf("two builds differ: %s, %s", a, b)
	}
}

func TestNode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds or reads the debootstrap cache")
	}
	img := testimage.Node(t)
	layers := layerNames(t, img)
	if len(layers) != 3 {
		t.Fatalf("%d layers, want 3", len(layers))
	}
	deb, err := testimage.Debian(t).Layers()
	if err != nil {
		t.Fatal(err)
	}
	nodeLayers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if a, b := layerDigest(t, deb[0]), layerDigest(t, nodeLayers[0]); a != b {
		t.Errorf("node's base layer %s is not Debian's %s", b, a)
	}
	install := layers[1]
	for _, p := range []string{"usr/bin/node", "var/lib/dpkg/status"} {
		if h := install[p]; h == nil || h.Typeflag != tar.TypeReg {
			t.Errorf("nodejs layer lacks the file %s (%+v)", p, h)
		}
	}
	if h := install["usr/bin/bash"]; h != nil {
		t.Errorf("nodejs layer repeats the unchanged usr/bin/bash")
	}
	if layers[2]["app/index.js"] == nil {
		t.Errorf("app layer lacks app/index.js")
	}
}

func layerDigest(t *testing.T, l v1.Layer) v1.Hash {
	t.Helper()
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}
