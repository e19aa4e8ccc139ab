package testimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"path"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Epoch is the modification time of every entry that sets none, so layers built twice
// have the same bytes and digests.
var Epoch = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// Entry is one tar entry of a hand-made layer. Zero fields take defaults: mode 0644 for
// files, 0755 for directories, 0777 for symlinks; owner 0:0; ModTime Epoch.
type Entry struct {
	Name     string // path inside the layer; a trailing "/" is added for directories
	Type     byte   // tar.TypeReg, TypeDir, TypeSymlink, TypeLink, TypeFifo, TypeChar, TypeBlock
	Mode     int64  // permission and setuid/setgid/sticky bits
	UID, GID int
	Data     []byte // file content
	Linkname string // symlink target or hardlink source (a path inside the layer stack)
	Xattrs   map[string]string
	ModTime  time.Time
	Major    int64 // device numbers for TypeChar and TypeBlock
	Minor    int64
}

// File is a regular file with the given content.
func File(name, data string) Entry { return Entry{Name: name, Type: tar.TypeReg, Data: []byte(data)} }

// Dir is a directory.
func Dir(name string) Entry { return Entry{Name: name, Type: tar.TypeDir} }

// Symlink is a symbolic link to target, kept verbatim.
func Symlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeSymlink, Linkname: target}
}

// Hardlink is a hard link to target: a file earlier in the same layer or in a lower one.
func Hardlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeLink, Linkname: target}
}

// Whiteout deletes p (a file or a whole tree) from the layers below.
func Whiteout(p string) Entry {
	dir, base := path.Split(strings.TrimSuffix(p, "/"))
	return Entry{Name: dir + ".wh." + base, Type: tar.TypeReg}
}

// Opaque hides everything the layers below have in dir; the marker's own layer may still
// put entries there.
func Opaque(dir string) Entry {
	return Entry{Name: strings.TrimSuffix(dir, "/") + "/.wh..wh..opq", Type: tar.TypeReg}
}

// WithMode returns e with the permission bits m.
func (e Entry) WithMode(m int64) Entry { e.Mode = m; return e }

// WithOwner returns e owned by uid:gid.
func (e Entry) WithOwner(uid, gid int) Entry { e.UID, e.GID = uid, gid; return e }

// WithXattr returns e with the extended attribute name=value (a PAX SCHILY.xattr record).
func (e Entry) WithXattr(name, value string) Entry {
	x := make(map[string]string, len(e.Xattrs)+1)
	for k, v := range e.Xattrs {
		x[k] = v
	}
	x[name] = value
	e.Xattrs = x
	return e
}

func (e Entry) header() *tar.Header {
	h := &tar.Header{
		Typeflag: e.Type,
		Name:     e.Name,
		Linkname: e.Linkname,
		Mode:     e.Mode,
		Uid:      e.UID,
		Gid:      e.GID,
		ModTime:  e.ModTime,
		Devmajor: e.Major,
		Devminor: e.Minor,
	}
	if h.ModTime.IsZero() {
		h.ModTime = Epoch
	}
	if h.Mode == 0 {
		switch e.Type {
		case tar.TypeDir:
			h.Mode = 0o755
		case tar.TypeSymlink:
			h.Mode = 0o777
		default:
			h.Mode = 0o644
		}
	}
	if e.Type == tar.TypeDir && !strings.HasSuffix(h.Name, "/") {
		h.Name += "/"
	}
	if e.Type == tar.TypeReg {
		h.Size = int64(len(e.Data))
	}
	if len(e.Xattrs) > 0 {
		h.Format = tar.FormatPAX
		h.PAXRecords = map[string]string{}
		for k, v := range e.Xattrs {
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	return h
}

// WriteTar writes entries, in the given order, as an uncompressed tar stream to w.
func WriteTar(w io.Writer, entries ...Entry) error {
	tw := tar.NewWriter(w)
	for _, e := range entries {
		if err := tw.WriteHeader(e.header()); err != nil {
			return fmt.Errorf("tar entry %s: %w", e.Name, err)
		}
		if e.Type == tar.TypeReg {
			if _, err := tw.Write(e.Data); err != nil {
				return fmt.Errorf("tar entry %s: %w", e.Name, err)
			}
		}
	}
	return tw.Close()
}

// TarBytes returns entries as an uncompressed tar stream.
func TarBytes(t testing.TB, entries ...Entry) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := WriteTar(&b, entries...); err != nil {
		t.Fatalf("build layer: %v", err)
	}
	return b.Bytes()
}

// Layer returns entries as a gzip-compressed layer with the Docker media type.
func Layer(t testing.TB, entries ...Entry) v1.Layer {
	t.Helper()
	return LayerFromTar(t, TarBytes(t, entries...), types.DockerLayer)
}

// OCILayer returns entries as a gzip-compressed layer with the OCI media type.
func OCILayer(t testing.TB, entries ...Entry) v1.Layer {
	t.Helper()
	return LayerFromTar(t, TarBytes(t, entries...), types.OCILayer)
}

// LayerFromTar wraps an uncompressed tar stream as a gzip-compressed layer of media type mt.
func LayerFromTar(t testing.TB, tarData []byte, mt types.MediaType) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarData)), nil
	}, tarball.WithMediaType(mt))
	if err != nil {
		t.Fatalf("layer: %v", err)
	}
	return l
}
