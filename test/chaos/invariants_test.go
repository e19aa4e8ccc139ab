//go:build chaos

package chaos

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// checkVerify runs `imgrun verify`: every cached blob must be intact and present.
func checkVerify(t testing.TB, c cli) {
	t.Helper()
	if r := c.run(t, "verify"); r.code != 0 {
		finding(t, "imgrun verify: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
}

// checkBlobs re-hashes every file under oci/blobs/sha256 itself and rejects anything else
// there (temp files, partial writes): a blob is visible only when whole and verified.
func checkBlobs(t testing.TB, root string) (n int) {
	t.Helper()
	dir := filepath.Join(root, "oci", "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatalf("read blobs: %v", err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			finding(t, "blobs/sha256/%s is not a regular file (%v)", e.Name(), e.Type())
			continue
		}
		sum, err := fileSHA256(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatalf("hash blob: %v", err)
		}
		if sum != e.Name() {
			finding(t, "blobs/sha256/%s holds bytes hashing to %s (partial or corrupt blob visible)", e.Name(), sum)
		}
		n++
	}
	return n
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// checkIndex parses ROOT/oci/index.json and checks that every image it lists has its
// manifest, config and layers present. It returns the ref names listed.
func checkIndex(t testing.TB, root string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "oci", "index.json"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("read index.json: %v", err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		finding(t, "index.json does not parse: %v", err)
		return nil
	}
	var names []string
	for _, d := range idx.Manifests {
		name := d.Annotations[ocispec.AnnotationRefName]
		names = append(names, name)
		mb, err := os.ReadFile(blobPath(root, d.Digest.Encoded()))
		if err != nil {
			finding(t, "index.json lists %s but its manifest %s is missing: %v", name, d.Digest, err)
			continue
		}
		var m ocispec.Manifest
		if err := json.Unmarshal(mb, &m); err != nil {
			finding(t, "manifest %s of %s does not parse: %v", d.Digest, name, err)
			continue
		}
		for _, l := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
			if _, err := os.Stat(blobPath(root, l.Digest.Encoded())); err != nil {
				finding(t, "index.json lists %s but its blob %s is missing", name, l.Digest)
			}
		}
	}
	return names
}

func blobPath(root, hex string) string { return filepath.Join(root, "oci", "blobs", "sha256", hex) }

// tree describes every entry under dir (type, mode, owner, size, content hash or link
// target), keyed by its path relative to dir; the root itself is left out.
func tree(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		desc := fmt.Sprintf("%v %d:%d", fi.Mode(), st.Uid, st.Gid)
		switch {
		case fi.Mode().IsRegular():
			sum, err := fileSHA256(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %d %s", fi.Size(), sum[:16])
		case fi.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + l
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return out
}

// diffTrees returns up to 5 differences between two trees.
func diffTrees(want, got map[string]string) []string {
	var d []string
	for k, v := range want {
		if g, ok := got[k]; !ok {
			d = append(d, "missing "+k)
		} else if g != v {
			d = append(d, fmt.Sprintf("%s: want %q got %q", k, v, g))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			d = append(d, "extra "+k)
		}
	}
	sort.Strings(d)
	if len(d) > 5 {
		d = append(d[:5], fmt.Sprintf("… %d more", len(d)-5))
	}
	return d
}

// dirEntries lists the names in ROOT/sub (nil when it does not exist).
func dirEntries(root, sub string) []string {
	ents, _ := os.ReadDir(filepath.Join(root, sub))
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// mountsUnder returns the mount points of this (the host's) mount namespace under root.
func mountsUnder(t testing.TB, root string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatalf("mountinfo: %v", err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == root || strings.HasPrefix(f[4], root+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}

// processesWith returns the pids whose command line contains marker.
func processesWith(marker string) []string {
	ents, _ := os.ReadDir("/proc")
	var pids []string
	self := fmt.Sprint(os.Getpid())
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' || e.Name() == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), marker) {
			pids = append(pids, e.Name()+":"+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return pids
}

// cgroupsOf returns the imgrun cgroup directories (any hierarchy) named after one of ids.
func cgroupsOf(ids []string) []string {
	var out []string
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/imgrun/*")
	more, _ := filepath.Glob("/sys/fs/cgroup/imgrun/*")
	for _, d := range append(dirs, more...) {
		for _, id := range ids {
			if id != "" && strings.Contains(filepath.Base(d), id) {
				out = append(out, d)
			}
		}
	}
	return out
}

// cgroupNames returns the names of the run cgroups under every hierarchy's imgrun parent.
func cgroupNames() map[string]bool {
	out := map[string]bool{}
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/imgrun/*")
	more, _ := filepath.Glob("/sys/fs/cgroup/imgrun/*")
	for _, d := range append(dirs, more...) {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			out[filepath.Base(d)] = true
		}
	}
	return out
}
