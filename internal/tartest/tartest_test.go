package tartest

import (
	"archive/tar"
	"bytes"
	"io"
	"testing"
)

func TestTar(t *testing.T) {
	entries := []Entry{
		Dir("d/"), File("d/f", "hi", Mode(0o4755), Owner(1, 2), Xattr("user.a", "b")),
		Symlink("l", "/abs"), Link("h", "d/f"), Whiteout("d/gone"), Whiteout("top"), Opaque("d"), Opaque(""),
		Fifo("p"), Char("c", 1, 3), Block("b", 8, 0), Global(map[string]string{"comment": "x"}),
	}
	data := Tar(entries...)
	if !bytes.Equal(data, Tar(entries...)) {
		t.Fatal("Tar is not deterministic")
	}
	want := []struct {
		name string
		typ  byte
	}{
		{"d/", tar.TypeDir}, {"d/f", tar.TypeReg}, {"l", tar.TypeSymlink}, {"h", tar.TypeLink},
		{"d/.wh.gone", tar.TypeReg}, {".wh.top", tar.TypeReg}, {"d/.wh..wh..opq", tar.TypeReg}, {".wh..wh..opq", tar.TypeReg},
		{"p", tar.TypeFifo}, {"c", tar.TypeChar}, {"b", tar.TypeBlock}, {"", tar.TypeXGlobalHeader},
	}
	tr := tar.NewReader(bytes.NewReader(data))
	for i, w := range want {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if h.Typeflag != w.typ || (w.typ != tar.TypeXGlobalHeader && h.Name != w.name) {
			t.Errorf("entry %d: %q type %q, want %q type %q", i, h.Name, h.Typeflag, w.name, w.typ)
		}
		if h.Name == "d/f" {
			body, _ := io.ReadAll(tr)
			if string(body) != "hi" || h.Mode != 0o4755 || h.Uid != 1 || h.Gid != 2 || h.PAXRecords["SCHILY.xattr.user.a"] != "b" || !h.ModTime.Equal(Epoch) {
				t.Errorf("d/f: %+v body %q", h, body)
			}
		}
		if h.Name == "c" && (h.Devmajor != 1 || h.Devminor != 3) {
			t.Errorf("c: device %d:%d", h.Devmajor, h.Devminor)
		}
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Errorf("extra entries: %v", err)
	}
}
