package testimage

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"

	"github.com/imgrun/imgrun/internal/testutil"
)

// debianRecipe names the cached base layer; bump it when debianBase changes what it
// writes, so stale caches are rebuilt rather than trusted.
const debianRecipe = "debian-bookworm-minbase-v1"

// DebianCacheDir is where the debootstrap base layer is cached (IMGRUN_TEST_CACHE
// overrides it).
func DebianCacheDir() string {
	if d := os.Getenv("IMGRUN_TEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/imgrun-test"
}

// DebianBaseLayer returns the path of the cached gzip base layer: a debootstrap
// --variant=minbase bookworm tree (with /dev emptied, as in docker images). The first
// caller on a machine builds it (as root, about a minute; it needs the Debian mirror,
// IMGRUN_DEBIAN_MIRROR or http://deb.debian.org/debian) under a file lock, so parallel
// test binaries share one build. When it cannot be built the test is skipped, or failed
// on CI.
func DebianBaseLayer(t testing.TB) string {
	t.Helper()
	dir := DebianCacheDir()
	final := filepath.Join(dir, debianRecipe+".tar.gz")
	if _, err := os.Stat(final); err == nil {
		return final
	}
	if os.Geteuid() != 0 {
		testutil.SkipOrFail(t, "debian base layer %s is not cached and debootstrap needs root", final)
	}
	debootstrap := testutil.MustBin(t, "debootstrap")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("debian cache: %v", err)
	}
	unlock, err := lockFile(filepath.Join(dir, debianRecipe+".lock"))
	if err != nil {
		t.Fatalf("debian cache: %v", err)
	}
	defer unlock()
	if _, err := os.Stat(final); err == nil { // built by another process while we waited
		return final
	}
	start := time.Now()
	if err := buildDebianBase(t.Context(), debootstrap, dir, final); err != nil {
		testutil.SkipOrFail(t, "build debian base layer: %v", err)
	}
	t.Logf("built %s in %s", final, time.Since(start).Round(time.Second))
	return final
}

// isDevEntry reports whether rel is inside /dev: debootstrap makes device nodes there,
// docker images ship /dev empty.
func isDevEntry(rel string) bool { return strings.HasPrefix(rel, "dev/") }

func lockFile(p string) (func(), error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	return func() { f.Close() }, nil
}

func buildDebianBase(ctx context.Context, debootstrap, dir, final string) error {
	work, err := os.MkdirTemp(dir, ".build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	root := filepath.Join(work, "rootfs")
	if err := runDebootstrap(ctx, debootstrap, root, work); err != nil {
		return err
	}
	tmp := filepath.Join(work, "base.tar.gz")
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	zw := gzip.NewWriter(f)
	if err := TarDir(zw, root, isDevEntry); err != nil {
		f.Close()
		return fmt.Errorf("tar rootfs: %w", err)
	}
	if err := zw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, final)
}

// TarDir writes the tree at root as a tar stream in lexical order: names relative to
// root, owners and modes and mtimes as on disk, hardlinked files as TypeLink entries,
// xattrs as PAX records. Entries for which skip(rel) is true are left out.
func TarDir(w io.Writer, root string, skip func(rel string) bool) error {
	tw := tar.NewWriter(w)
	err := tarDir(tw, root, func(rel string, _ fs.FileInfo) (bool, error) {
		return skip != nil && skip(rel), nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// tarDir writes the tree at root to tw (without closing it), leaving out entries for
// which skip is true. A file whose hardlink twin was skipped is written as a regular file.
func tarDir(tw *tar.Writer, root string, skip func(rel string, fi fs.FileInfo) (bool, error)) error {
	seen := map[[2]uint64]string{} // (dev, inode) of multiply linked files → first name written
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if s, err := skip(rel, fi); err != nil || s { // a skipped directory's contents are still visited
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		h.Name = rel
		if fi.IsDir() {
			h.Name += "/"
		}
		h.Uname, h.Gname = "", ""
		h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
		h.ModTime = h.ModTime.Truncate(time.Second)
		h.Format = tar.FormatPAX
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().IsRegular() && st.Nlink > 1 {
			key := [2]uint64{uint64(st.Dev), st.Ino}
			if first, ok := seen[key]; ok {
				h.Typeflag, h.Linkname, h.Size = tar.TypeLink, first, 0
			} else {
				seen[key] = h.Name
			}
		}
		if err := addXattrs(h, p); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if h.Typeflag == tar.TypeReg && h.Size > 0 {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
		}
		return nil
	})
}

func addXattrs(h *tar.Header, p string) error {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil
		}
		return fmt.Errorf("list xattrs: %w", err)
	}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		val := make([]byte, 4096)
		m, err := unix.Lgetxattr(p, name, val)
		if err != nil {
			return fmt.Errorf("xattr %s: %w", name, err)
		}
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords["SCHILY.xattr."+name] = string(val[:m])
	}
	return nil
}

// DebianLayers are the two layers Debian stacks on the debootstrap base. Layer 2 adds
// /opt/app (a setuid file, a file owned by 1000, symlinks, a hardlink to the base's
// /usr/bin/perl), replaces /etc/hostname and /etc/motd, and makes /usr/share/doc opaque
// (hiding every package's docs) with one new file in it. Layer 3 deletes files and
// trees from both layers below (/etc/motd, /usr/share/man, /var/lib/apt/lists,
// /opt/app/data.txt, /usr/bin/perl, whose hardlinks perl5.36.0 and /opt/app/perl-link
// survive), deletes and
// recreates /usr/share/locale, and replaces the directory /srv with a file.
func DebianLayers() [][]Entry {
	return [][]Entry{
		{
			Dir("etc"),
			File("etc/hostname", "imgrun-debian\n"),
			File("etc/motd", "layer 2 motd\n"),
			Dir("opt/app"),
			Dir("opt/app/bin"),
			File("opt/app/bin/run.sh", "#!/bin/sh\necho run\n").WithMode(0o755),
			File("opt/app/data.txt", "deleted by layer 3\n"),
			File("opt/app/hello.txt", "hello from layer 2\n"),
			File("opt/app/owned", "owned by 1000\n").WithOwner(1000, 1000).WithMode(0o600),
			File("opt/app/suid", "setuid\n").WithMode(0o4755),
			Symlink("opt/app/current", "/opt/app/bin"),
			Symlink("opt/app/hello-link", "hello.txt"),
			Hardlink("opt/app/perl-link", "usr/bin/perl"), // perl5.36.0 links to it in the base
			Opaque("usr/share/doc"),
			Dir("usr/share/doc/imgrun"),
			File("usr/share/doc/imgrun/README", "the only docs left\n"),
		},
		{
			Whiteout("etc/motd"),
			Whiteout("usr/share/man"),
			Whiteout("var/lib/apt/lists"),
			Whiteout("opt/app/data.txt"),
			Whiteout("usr/bin/perl"), // its hardlinks perl5.36.0 and opt/app/perl-link keep the bytes
			Whiteout("usr/share/locale"),
			Dir("usr/share/locale"),
			File("usr/share/locale/README", "recreated by layer 3\n"),
			Whiteout("srv"),
			File("srv", "srv is a file now\n"),
		},
	}
}

// Debian returns the three-layer Debian bookworm image (Docker schema 2 media types):
// the cached debootstrap base (DebianBaseLayer) and DebianLayers, with Env PATH and
// Cmd bash.
func Debian(t testing.TB) v1.Image {
	t.Helper()
	base, err := tarball.LayerFromFile(DebianBaseLayer(t))
	if err != nil {
		t.Fatalf("debian base layer: %v", err)
	}
	ls := []v1.Layer{base}
	for _, es := range DebianLayers() {
		ls = append(ls, Layer(t, es...))
	}
	cfg := v1.Config{Env: []string{"PATH=" + DefaultPath}, Cmd: []string{"bash"}}
	return Image(t, cfg, false, ls...)
}
