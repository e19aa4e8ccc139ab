package testimage

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/klauspost/compress/gzip"

	"github.com/imgrun/imgrun/internal/testutil"
)

// nodeRecipe names the cached nodejs layer; bump it when nodeDiff changes.
const nodeRecipe = "debian-bookworm-nodejs-v2"

// Node returns a realistic node image (Docker schema 2): the Debian base layer of
// DebianBaseLayer (the same blob as Debian's), a layer with Debian's nodejs package and
// its dependencies as `apt-get install nodejs` would leave it (made by debootstrap
// --include=nodejs and diffed against the base, whiteouts included), and a small app
// layer with /app/index.js. Env PATH, WorkingDir /app, Cmd node. `node -v` prints the
// version of Debian bookworm's nodejs.
func Node(t testing.TB) v1.Image {
	t.Helper()
	paths := []string{DebianBaseLayer(t), NodeLayer(t)}
	var ls []v1.Layer
	for _, p := range paths {
		l, err := tarball.LayerFromFile(p)
		if err != nil {
			t.Fatalf("node layer: %v", err)
		}
		ls = append(ls, l)
	}
	ls = append(ls, Layer(t,
		Dir("app"),
		File("app/index.js", "console.log(`hello from node ${process.version}`);\n"),
		File("app/package.json", `{"name":"app","version":"1.0.0","main":"index.js"}`+"\n"),
	))
	cfg := v1.Config{
		Env:        []string{"PATH=" + DefaultPath, "NODE_ENV=production"},
		WorkingDir: "/app",
		Cmd:        []string{"node"},
	}
	return Image(t, cfg, false, ls...)
}

// NodeLayer returns the path of the cached gzip layer that installs nodejs on top of
// DebianBaseLayer, building it on first use like DebianBaseLayer.
func NodeLayer(t testing.TB) string {
	t.Helper()
	base := DebianBaseLayer(t)
	dir := DebianCacheDir()
	final := filepath.Join(dir, nodeRecipe+".tar.gz")
	if _, err := os.Stat(final); err == nil {
		return final
	}
	if os.Geteuid() != 0 {
		testutil.SkipOrFail(t, "nodejs layer %s is not cached and debootstrap needs root", final)
	}
	debootstrap := testutil.MustBin(t, "debootstrap")
	unlock, err := lockFile(filepath.Join(dir, nodeRecipe+".lock"))
	if err != nil {
		t.Fatalf("nodejs layer: %v", err)
	}
	defer unlock()
	if _, err := os.Stat(final); err == nil {
		return final
	}
	start := time.Now()
	if err := buildNodeLayer(t.Context(), debootstrap, base, dir, final); err != nil {
		testutil.SkipOrFail(t, "build nodejs layer: %v", err)
	}
	t.Logf("built %s in %s", final, time.Since(start).Round(time.Second))
	return final
}

func buildNodeLayer(ctx context.Context, debootstrap, base, dir, final string) error {
	work, err := os.MkdirTemp(dir, ".build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	root := filepath.Join(work, "rootfs")
	if err := runDebootstrap(ctx, debootstrap, root, work, "--include=nodejs"); err != nil {
		return err
	}
	baseSigs, err := tarSignatures(base)
	if err != nil {
		return fmt.Errorf("read base layer: %w", err)
	}
	tmp := filepath.Join(work, "layer.tar.gz")
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	if err := nodeDiff(zw, root, baseSigs); err != nil {
		return fmt.Errorf("diff rootfs: %w", err)
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return os.Rename(tmp, final)
}

// nodeDiff writes, as one layer, how the tree at root differs from the base layer whose
// entries have the signatures base: whiteouts for what root lacks, then every entry
// that is new or changed (type, mode, owner, mtime, link target or content).
func nodeDiff(w io.Writer, root string, base map[string]string) error {
	tw := tar.NewWriter(w)
	var gone []string
	for name := range base {
		if _, err := os.Lstat(filepath.Join(root, name)); errors.Is(err, fs.ErrNotExist) {
			gone = append(gone, name)
		}
	}
	sort.Strings(gone)
	for i, name := range gone {
		if i > 0 && strings.HasPrefix(name, gone[i-1]+"/") {
			continue // inside a tree already whited out
		}
		dir, file := path.Split(name)
		h := &tar.Header{Typeflag: tar.TypeReg, Name: dir + ".wh." + file, Mode: 0o644, ModTime: Epoch}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
	}
	err := tarDir(tw, root, func(rel string, fi fs.FileInfo) (bool, error) {
		if isDevEntry(rel) || isAptLeftover(rel) {
			return true, nil
		}
		sig, err := fileSignature(filepath.Join(root, rel), fi)
		return err == nil && base[rel] == sig, err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// isAptLeftover reports whether rel is a downloaded package or package list, which
// image builds delete (`rm -rf /var/lib/apt/lists/*`) in the layer that installs.
func isAptLeftover(rel string) bool {
	for _, dir := range []string{"var/cache/apt/archives/", "var/lib/apt/lists/"} {
		if rest, ok := strings.CutPrefix(rel, dir); ok && rest != "partial" && rest != "lock" {
			return true
		}
	}
	return strings.HasPrefix(rel, "var/cache/apt/") && strings.HasSuffix(rel, ".bin")
}

// signature is what makes two entries of the same name equal for a layer diff.
func signature(typ string, mode int64, uid, gid int, mtime time.Time, rest string) string {
	return fmt.Sprintf("%s %o %d:%d %d %s", typ, mode&0o7777, uid, gid, mtime.Unix(), rest)
}

func fileSignature(p string, fi fs.FileInfo) (string, error) {
	st := fi.Sys().(*syscall.Stat_t)
	mode := int64(fi.Mode().Perm())
	if fi.Mode()&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if fi.Mode()&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if fi.Mode()&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	uid, gid, mt := int(st.Uid), int(st.Gid), fi.ModTime()
	switch m := fi.Mode(); {
	case m.IsRegular():
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return "", err
		}
		return signature("file", mode, uid, gid, mt, hex.EncodeToString(h.Sum(nil))), nil
	case m.IsDir():
		return signature("dir", mode, uid, gid, mt, ""), nil
	case m&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		return signature("symlink", 0, uid, gid, mt, target), err
	default:
		return signature("other", mode, uid, gid, mt, m.Type().String()), nil
	}
}

// tarSignatures reads a gzip layer and returns each entry's signature by name (without
// a trailing "/"); a hardlink has its target's.
func tarSignatures(layer string) (map[string]string, error) {
	f, err := os.Open(layer)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		name := strings.TrimSuffix(h.Name, "/")
		switch h.Typeflag {
		case tar.TypeReg:
			hh := sha256.New()
			if _, err := io.Copy(hh, tr); err != nil {
				return nil, err
			}
			out[name] = signature("file", h.Mode, h.Uid, h.Gid, h.ModTime, hex.EncodeToString(hh.Sum(nil)))
		case tar.TypeLink:
			out[name] = out[h.Linkname]
		case tar.TypeDir:
			out[name] = signature("dir", h.Mode, h.Uid, h.Gid, h.ModTime, "")
		case tar.TypeSymlink:
			out[name] = signature("symlink", 0, h.Uid, h.Gid, h.ModTime, h.Linkname)
		default:
			out[name] = signature("other", h.Mode, h.Uid, h.Gid, h.ModTime, string(h.Typeflag))
		}
	}
}

// runDebootstrap makes a minbase bookworm tree in root (extra: more debootstrap flags),
// logging into dir.
func runDebootstrap(ctx context.Context, debootstrap, root, dir string, extra ...string) error {
	mirror := os.Getenv("IMGRUN_DEBIAN_MIRROR")
	if mirror == "" {
		mirror = "http://deb.debian.org/debian"
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	logPath := filepath.Join(dir, "debootstrap.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	args := append([]string{"--variant=minbase"}, extra...)
	args = append(args, "bookworm", root, mirror)
	cmd := exec.CommandContext(ctx, debootstrap, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Run()
	logf.Close()
	if err != nil {
		log, _ := os.ReadFile(logPath)
		if len(log) > 4096 {
			log = log[len(log)-4096:]
		}
		return fmt.Errorf("debootstrap %s: %w\n%s", strings.Join(args, " "), err, log)
	}
	return nil
}
