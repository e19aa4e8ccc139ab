package rootfs

import (
	"bytes"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/imgrun/imgrun/internal/tartest"
)

// describe is one line per path: type, mode, owner and content or link target.
func describe(t testing.TB, p string) string {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	perm := st.Mode & 0o7777
	own := fmt.Sprintf("%d:%d", st.Uid, st.Gid)
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("file %04o %s %q", perm, own, b)
	case syscall.S_IFDIR:
		return fmt.Sprintf("dir %04o %s", perm, own)
	case syscall.S_IFLNK:
		target, err := os.Readlink(p)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("symlink %s %s", target, own)
	case syscall.S_IFIFO:
		return fmt.Sprintf("fifo %04o %s", perm, own)
	case syscall.S_IFCHR:
		return fmt.Sprintf("char %d:%d %04o %s", st.Rdev>>8, st.Rdev&0xff, perm, own)
	case syscall.S_IFBLK:
		return fmt.Sprintf("block %d:%d %04o %s", st.Rdev>>8, st.Rdev&0xff, perm, own)
	}
	return "unknown"
}

// tree describes every path under root (root itself excluded).
func tree(t testing.TB, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		m[rel] = describe(t, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func diffTrees(got, want map[string]string) string {
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

// applyLayers applies each layer in order into root, stopping at the first error.
func applyLayers(t testing.TB, root string, layers [][]tartest.Entry, opts ...ApplyOption) error {
	t.Helper()
	for i, l := range layers {
		if err := Apply(t.Context(), root, bytes.NewReader(tartest.Tar(l...)), opts...); err != nil {
			return fmt.Errorf("layer %d: %w", i+1, err)
		}
	}
	return nil
}

func requiresRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("requires root")
	}
}
