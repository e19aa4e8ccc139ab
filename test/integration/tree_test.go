//go:build integration

package integration

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// node is what the export equality test compares for one path of a flattened image:
// what `docker export` users compare (type, mode, owner, link target, content) plus
// hardlink groups and the xattrs images use.
type node struct {
	Type      string // "file", "dir", "symlink", "fifo", "char", "block"
	Mode      fs.FileMode
	UID, GID  int
	Link      string // symlink target
	Content   string // sha256 of a file's bytes
	Dev       string // "major:minor" of devices
	LinkGroup string // the smallest path of the file's hardlink group; "" when not linked
	Xattrs    string // sorted name=value of user.* and security.capability
}

type tree map[string]node // path relative to the root, no leading "/" → node

// keptXattr reports whether an xattr is part of the comparison: what images carry, not
// what the host filesystem adds (security.selinux).
func keptXattr(name string) bool {
	return strings.HasPrefix(name, "user.") && name != "user.rootlesscontainers" || name == "security.capability"
}

func formatXattrs(x map[string]string) string {
	var parts []string
	for k, v := range x {
		if keptXattr(k) {
			parts = append(parts, k+"="+hex.EncodeToString([]byte(v)))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// treeOfDir reads the tree at root from disk.
func treeOfDir(t *testing.T, root string) tree {
	t.Helper()
	out := tree{}
	inodes := map[uint64][]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		n := node{Mode: fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky), UID: int(st.Uid), GID: int(st.Gid)}
		switch m := fi.Mode(); {
		case m.IsRegular():
			n.Type = "file"
			n.Content = hashFile(t, p)
			if st.Nlink > 1 {
				inodes[st.Ino] = append(inodes[st.Ino], rel)
			}
		case m.IsDir():
			n.Type = "dir"
		case m&fs.ModeSymlink != 0:
			n.Type = "symlink"
			n.Mode = 0 // symlink permissions mean nothing on Linux
			if n.Link, err = os.Readlink(p); err != nil {
				return err
			}
		case m&fs.ModeNamedPipe != 0:
			n.Type = "fifo"
		case m&fs.ModeCharDevice != 0:
			n.Type, n.Dev = "char", fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		case m&fs.ModeDevice != 0:
			n.Type, n.Dev = "block", fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		default:
			return fmt.Errorf("%s: unexpected type %s", rel, m.Type())
		}
		n.Xattrs = formatXattrs(listXattrs(t, p))
		out[rel] = n
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	for _, names := range inodes {
		setGroup(out, names)
	}
	return out
}

func setGroup(tr tree, names []string) {
	if len(names) < 2 {
		return
	}
	sort.Strings(names)
	for _, p := range names {
		n := tr[p]
		n.LinkGroup = names[0]
		tr[p] = n
	}
}

func hashFile(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func listXattrs(t *testing.T, p string) map[string]string {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil
		}
		t.Fatalf("xattrs of %s: %v", p, err)
	}
	out := map[string]string{}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" || !keptXattr(name) {
			continue
		}
		val := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, val)
		if err != nil {
			t.Fatalf("xattr %s of %s: %v", name, p, err)
		}
		out[name] = string(val[:m])
	}
	return out
}

// treeOfTar reads a flattened export. Hardlink entries take their target's content and
// join its group. It fails on whiteouts, duplicates and links to missing targets: an
// export is a finished tree, not a layer.
func treeOfTar(t *testing.T, r io.Reader) tree {
	t.Helper()
	out := tree{}
	groups := map[string][]string{} // first name of a group → members
	groupOf := map[string]string{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read export: %v", err)
		}
		name := strings.TrimSuffix(path.Clean("/" + h.Name)[1:], "/")
		if name == "" {
			continue // the root itself
		}
		if strings.HasPrefix(path.Base(name), ".wh.") {
			t.Errorf("export contains the whiteout %s", h.Name)
		}
		if _, dup := out[name]; dup {
			t.Errorf("export has %s twice", name)
		}
		n := node{Mode: fs.FileMode(h.Mode & 0o777), UID: h.Uid, GID: h.Gid}
		if h.Mode&0o4000 != 0 {
			n.Mode |= fs.ModeSetuid
		}
		if h.Mode&0o2000 != 0 {
			n.Mode |= fs.ModeSetgid
		}
		if h.Mode&0o1000 != 0 {
			n.Mode |= fs.ModeSticky
		}
		x := map[string]string{}
		for k, v := range h.PAXRecords {
			if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				x[name] = v
			}
		}
		n.Xattrs = formatXattrs(x)
		switch h.Typeflag {
		case tar.TypeReg:
			n.Type = "file"
			hh := sha256.New()
			if _, err := io.Copy(hh, tr); err != nil {
				t.Fatalf("read export entry %s: %v", name, err)
			}
			n.Content = hex.EncodeToString(hh.Sum(nil))
		case tar.TypeLink:
			target := strings.TrimSuffix(path.Clean("/" + h.Linkname)[1:], "/")
			tn, ok := out[target]
			if !ok || tn.Type != "file" {
				t.Errorf("export hardlink %s -> %s: target is not an earlier file", name, h.Linkname)
				continue
			}
			n = tn // a hardlink is the same inode: its own header metadata does not count
			first, ok := groupOf[target]
			if !ok {
				first = target
				groupOf[target] = target
				groups[target] = []string{target}
			}
			groupOf[name] = first
			groups[first] = append(groups[first], name)
		case tar.TypeDir:
			n.Type = "dir"
		case tar.TypeSymlink:
			n.Type, n.Link, n.Mode = "symlink", h.Linkname, 0
		case tar.TypeFifo:
			n.Type = "fifo"
		case tar.TypeChar:
			n.Type, n.Dev = "char", fmt.Sprintf("%d:%d", h.Devmajor, h.Devminor)
		case tar.TypeBlock:
			n.Type, n.Dev = "block", fmt.Sprintf("%d:%d", h.Devmajor, h.Devminor)
		default:
			t.Errorf("export entry %s has type %q", name, h.Typeflag)
			continue
		}
		out[name] = n
	}
	for _, names := range groups {
		setGroup(out, names)
	}
	return out
}

// compareTrees reports every path where got differs from want (at most 30).
func compareTrees(t *testing.T, what string, got, want tree) {
	t.Helper()
	var diffs []string
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("missing %s (%+v)", p, w))
		case g != w:
			diffs = append(diffs, fmt.Sprintf("%s:\n\t got %+v\n\twant %+v", p, g, w))
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("extra %s (%+v)", p, g))
		}
	}
	if len(diffs) == 0 {
		return
	}
	sort.Strings(diffs)
	if len(diffs) > 30 {
		diffs = append(diffs[:30], fmt.Sprintf("… and %d more", len(diffs)-30))
	}
	t.Errorf("%s differs from the oracle in %d paths (of %d):\n%s", what, len(diffs), len(want), strings.Join(diffs, "\n"))
}
