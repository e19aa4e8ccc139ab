package rootfs

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestReadDir checks the getdents64 listing (names and d_type) against os.ReadDir, on a
// directory big enough to need several getdents calls.
func TestReadDir(t *testing.T) {
	dir := t.TempDir()
	for i := range 3000 {
		name := filepath.Join(dir, strings.Repeat("n", i%200+1)+"-"+strconv.Itoa(i))
		var err error
		switch i % 4 {
		case 0:
			err = os.Mkdir(name, 0o755)
		case 1:
			err = os.Symlink("target", name)
		case 2:
			err = unix.Mkfifo(name, 0o600)
		default:
			err = os.WriteFile(name, nil, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	got, err := readDir(fd)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(a, b dirent) int { return strings.Compare(a.name, b.name) })
	if len(got) != len(want) {
		t.Fatalf("readDir: %d names, os.ReadDir: %d", len(got), len(want))
	}
	for i, w := range want {
		var mode uint32 = unix.S_IFREG
		switch {
		case w.IsDir():
			mode = unix.S_IFDIR
		case w.Type()&os.ModeSymlink != 0:
			mode = unix.S_IFLNK
		}
		if got[i].name != w.Name() || (got[i].mode != 0 && got[i].mode != mode) {
			t.Errorf("entry %d: got %q mode %o, want %q mode %o", i, got[i].name, got[i].mode, w.Name(), mode)
		}
	}
}
