package testimage

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TrickyLayers are three small layers that exercise the flattening rules: whiteouts of
// files and trees, an opaque directory that keeps its own layer's entries, hardlinks
// within a layer and to a lower layer's file, a type change (directory to symlink), an
// absolute symlink, setuid and owner bits, and an xattr.
func TrickyLayers() [][]Entry {
	return [][]Entry{
		{
			Dir("etc"),
			File("etc/config", "base config\n"),
			File("etc/gone", "deleted by layer 3\n"),
			Dir("data"),
			File("data/a", "a\n"),
			File("data/b", "b\n"),
			Dir("data/sub"),
			File("data/sub/c", "c\n"),
			File("shared", "shared content\n"),
			Hardlink("shared-link", "shared"),
			Dir("tree"),
			File("tree/x", "x\n"),
			Dir("usr/bin"),
			File("usr/bin/su", "not really su\n").WithMode(0o4755),
		},
		{
			Opaque("data"),
			File("data/new", "only file of data after layer 2\n"),
			Hardlink("cross-link", "shared"),
			File("owned", "owned by 1000:1000\n").WithOwner(1000, 1000).WithMode(0o640),
			File("caps", "with an xattr\n").WithXattr("user.imgrun", "test"),
			Symlink("abs-link", "/etc/config"),
			File("etc/config", "layer 2 config\n"),
		},
		{
			Whiteout("etc/gone"),
			Whiteout("tree"),
			Symlink("tree", "data"),
			Whiteout("shared"),
			File("data/late", "layer 3 adds to the opaque dir\n"),
		},
	}
}

// TrickyResult is the flattened content of TrickyLayers: path to file content, "->target"
// for symlinks, and "dir" for directories. Hardlinked files list their content.
var TrickyResult = map[string]string{
	"etc":         "dir",
	"etc/config":  "layer 2 config\n",
	"data":        "dir",
	"data/new":    "only file of data after layer 2\n",
	"data/late":   "layer 3 adds to the opaque dir\n",
	"shared-link": "shared content\n",
	"cross-link":  "shared content\n",
	"owned":       "owned by 1000:1000\n",
	"caps":        "with an xattr\n",
	"abs-link":    "->/etc/config",
	"tree":        "->data",
	"usr":         "dir",
	"usr/bin":     "dir",
	"usr/bin/su":  "not really su\n",
}

// Tricky returns TrickyLayers as a Docker schema 2 image.
func Tricky(t testing.TB) v1.Image {
	t.Helper()
	var ls []v1.Layer
	for _, es := range TrickyLayers() {
		ls = append(ls, Layer(t, es...))
	}
	return Image(t, v1.Config{Env: []string{"PATH=" + DefaultPath}}, false, ls...)
}
