package rootfs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imgrun/imgrun/internal/tartest"
	"github.com/imgrun/imgrun/pkg/rootfs"
)

// memLayer is a layer whose uncompressed tar is held in memory: a real tar, not a mock.
type memLayer []byte

func (m memLayer) Uncompressed(context.Context) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(m)), nil
}

// badLayer is a layer whose reader returns all of its bytes and then err instead of io.EOF,
// as pkg/layers' reader does when the diffID does not match.
type badLayer struct {
	data []byte
	err  error
}

func (b badLayer) Uncompressed(context.Context) (io.ReadCloser, error) {
	return io.NopCloser(io.MultiReader(bytes.NewReader(b.data), errReader{b.err})), nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

var errDiffID = errors.New("diffID mismatch (simulated)")

// memLayers turns entry lists into layers, lowest first.
func memLayers(ls ...[]tartest.Entry) []rootfs.Layer {
	out := make([]rootfs.Layer, len(ls))
	for i, l := range ls {
		out[i] = memLayer(tartest.Tar(l...))
	}
	return out
}

// flatDesc describes one path of a flattened tree in a form that a tree on disk and an
// exported tar both give: type, mode, owner (as root), content or target, and for files that
// share an inode, the first (sorted) path of the group.
type flatDesc struct {
	typ     string
	mode    int64
	uid     int
	gid     int
	content string // file bytes, symlink target, device numbers
	group   string // hard-link group: first path sharing the inode ("" if alone)
}

func (d flatDesc) String() string {
	s := fmt.Sprintf("%s %04o", d.typ, d.mode)
	if os.Geteuid() == 0 {
		s += fmt.Sprintf(" %d:%d", d.uid, d.gid)
	}
	if d.content != "" {
		s += fmt.Sprintf(" %q", d.content)
	}
	if d.group != "" {
		s += " =" + d.group
	}
	return s
}

// diskTree describes every path under root (root excluded) from the filesystem.
func diskTree(t testing.TB, root string) map[string]string {
	t.Helper()
	descs := map[string]flatDesc{}
	inodes := map[uint64][]string{}
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		d := flatDesc{mode: int64(st.Mode & 0o7777), uid: int(st.Uid), gid: int(st.Gid)}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			d.typ, d.content = "file", string(b)
		case syscall.S_IFDIR:
			d.typ = "dir"
		case syscall.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			d.typ, d.mode, d.content = "symlink", 0, target
		case syscall.S_IFIFO:
			d.typ = "fifo"
		case syscall.S_IFCHR, syscall.S_IFBLK:
			d.typ = "char"
			if st.Mode&syscall.S_IFMT == syscall.S_IFBLK {
				d.typ = "block"
			}
			d.content = fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		if d.typ != "dir" && st.Nlink > 1 {
			inodes[st.Ino] = append(inodes[st.Ino], rel)
		}
		descs[rel] = d
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, paths := range inodes {
		if len(paths) < 2 {
			continue
		}
		first := slices.Min(paths)
		for _, p := range paths {
			d := descs[p]
			d.group = first
			descs[p] = d
		}
	}
	return stringify(descs)
}

// tarTree describes the tree a tar stream gives when extracted: later entries replace earlier
// ones, hard links share their target's description. It fails on whiteout names and on hard
// links to a name not yet in the stream.
func tarTree(t testing.TB, data []byte) map[string]string {
	t.Helper()
	descs := map[string]flatDesc{}
	groups := map[string][]string{} // representative -> link names
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read export: %v", err)
		}
		name := strings.TrimSuffix(h.Name, "/")
		if strings.HasPrefix(filepath.Base(name), rootfs.WhiteoutPrefix) {
			t.Errorf("export has a whiteout entry %q", h.Name)
		}
		d := flatDesc{mode: h.Mode & 0o7777, uid: h.Uid, gid: h.Gid}
		switch h.Typeflag {
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			d.typ, d.content = "file", string(b)
		case tar.TypeDir:
			d.typ = "dir"
		case tar.TypeSymlink:
			d.typ, d.mode, d.content = "symlink", 0, h.Linkname
		case tar.TypeFifo:
			d.typ = "fifo"
		case tar.TypeChar, tar.TypeBlock:
			d.typ = map[byte]string{tar.TypeChar: "char", tar.TypeBlock: "block"}[h.Typeflag]
			d.content = fmt.Sprintf("%d:%d", h.Devmajor, h.Devminor)
		case tar.TypeLink:
			target, ok := descs[h.Linkname]
			if !ok {
				t.Fatalf("export: hard link %q to %q, which is not before it", h.Name, h.Linkname)
			}
			d = target
			groups[h.Linkname] = append(groups[h.Linkname], name)
		default:
			t.Fatalf("export: unexpected type %q for %q", h.Typeflag, h.Name)
		}
		descs[name] = d
	}
	for rep, links := range groups {
		all := append([]string{rep}, links...)
		first := slices.Min(all)
		for _, p := range all {
			d := descs[p]
			d.group = first
			descs[p] = d
		}
	}
	return stringify(descs)
}

func stringify(descs map[string]flatDesc) map[string]string {
	out := make(map[string]string, len(descs))
	for p, d := range descs {
		out[p] = d.String()
	}
	return out
}

// diffMaps lists the differences between two descriptions, one per line.
func diffMaps(got, want map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[k]; !ok {
			fmt.Fprintf(&b, "missing %s (want %s)\n", k, want[k])
		} else if g != want[k] {
			fmt.Fprintf(&b, "%s: got %s, want %s\n", k, g, want[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			fmt.Fprintf(&b, "extra %s: %s\n", k, got[k])
		}
	}
	return b.String()
}

// exportBytes runs Export into memory.
func exportBytes(t testing.TB, layers []rootfs.Layer) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := rootfs.Export(t.Context(), &buf, layers); err != nil {
		t.Fatalf("Export: %v", err)
	}
	return buf.Bytes()
}

// flattenTree runs Flatten into a new directory and describes the result.
func flattenTree(t testing.TB, layers []rootfs.Layer) map[string]string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "rootfs")
	if err := rootfs.Flatten(t.Context(), dir, layers); err != nil {
		t.Fatalf("Flatten: %v", err)
	}
	return diskTree(t, dir)
}

// describeLayers lists the entries of a test image, layer by layer, for failure messages.
func describeLayers(ls []tl) string {
	var b strings.Builder
	for i, l := range ls {
		fmt.Fprintf(&b, "layer %d:", i+1)
		for _, e := range l {
			fmt.Fprintf(&b, " %c:%s", e.Header.Typeflag, e.Header.Name)
			if e.Header.Linkname != "" {
				fmt.Fprintf(&b, "->%s", e.Header.Linkname)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}
