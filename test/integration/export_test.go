//go:build integration

package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgrun/imgrun/internal/distreg"
	"github.com/imgrun/imgrun/internal/testimage"
	"github.com/imgrun/imgrun/internal/testutil"
	"github.com/imgrun/imgrun/pkg/layers"
	"github.com/imgrun/imgrun/pkg/rootfs"
)

// TestExportMatchesUmoci pulls multi-layer images with real whiteouts (Debian bookworm
// from debootstrap; the small tricky image) from the real registry, then compares
// rootfs.Export and rootfs.Flatten against umoci unpack of the same blobs: every path's
// type, mode, owner, link target, content, hardlink group and xattrs.
func TestExportMatchesUmoci(t *testing.T) {
	testutil.RequiresRoot(t) // owners, devices and security.capability need root on both sides
	umoci := testutil.MustBin(t, "umoci")
	reg := distreg.Start(t)
	tests := []struct {
		name  string
		image func(testing.TB) v1.Image
		check func(*testing.T, tree) // sanity checks of the oracle's tree
	}{
		{"tricky", testimage.Tricky, func(*testing.T, tree) {}}, // TestUmociOracle checks it fully
		{"debian", testimage.Debian, checkDebianTree},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := "test/" + tt.name + ":1"
			reg.Push(t, repo, tt.image(t))
			st := openStore(t)
			img, err := pull(t, st, reg.Ref(repo))
			if err != nil {
				t.Fatalf("pull: %v", err)
			}
			want := umociUnpack(t, umoci, st, img)
			tt.check(t, want)

			var exp bytes.Buffer
			if err := rootfs.Export(t.Context(), &exp, rootfsLayers(img)); err != nil {
				t.Fatalf("export: %v", err)
			}
			sum := sha256.Sum256(exp.Bytes())
			compareTrees(t, "export", treeOfTar(t, bytes.NewReader(exp.Bytes())), want)

			var again bytes.Buffer
			if err := rootfs.Export(t.Context(), &again, rootfsLayers(img)); err != nil {
				t.Fatalf("second export: %v", err)
			}
			if sha256.Sum256(again.Bytes()) != sum {
				t.Errorf("two exports of the same image differ")
			}

			dir := filepath.Join(t.TempDir(), "rootfs")
			if err := rootfs.Flatten(t.Context(), dir, rootfsLayers(img)); err != nil {
				t.Fatalf("flatten: %v", err)
			}
			compareTrees(t, "flatten", treeOfDir(t, dir), want)
		})
	}
}

func rootfsLayers(img *layers.Image) []rootfs.Layer {
	var out []rootfs.Layer
	for _, l := range img.Layers() {
		out = append(out, l)
	}
	return out
}

// umociUnpack unpacks img with umoci and returns the tree it made. umoci reads an OCI
// layout: a new one beside the store's, sharing its blobs by hardlink, whose index names
// the image "test" (umoci's tag syntax does not allow the full reference). Docker media
// types are rewritten to their OCI twins in a copy of the manifest and config, since umoci
// only takes OCI manifests; the layer blobs are the very ones imgrun pulled.
func umociUnpack(t *testing.T, umoci string, st *layers.Store, img *layers.Image) tree {
	t.Helper()
	layout := filepath.Join(t.TempDir(), "oci")
	blobs := filepath.Join(layout, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(st.LayoutDir(), "blobs", "sha256")
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if err := os.Link(filepath.Join(src, e.Name()), filepath.Join(blobs, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	writeBlob := func(v any) ocispec.Descriptor {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		d := digest.FromBytes(b)
		if err := os.WriteFile(filepath.Join(blobs, d.Encoded()), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return ocispec.Descriptor{Digest: d, Size: int64(len(b))}
	}
	m := img.Manifest
	m.MediaType = ocispec.MediaTypeImageManifest
	cfg := writeBlob(img.Config)
	m.Config = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cfg.Digest, Size: cfg.Size}
	m.Layers = append([]ocispec.Descriptor(nil), m.Layers...)
	for i, l := range m.Layers {
		if strings.HasPrefix(l.MediaType, "application/vnd.docker.image.rootfs.diff.tar") {
			m.Layers[i].MediaType = ocispec.MediaTypeImageLayerGzip
		}
	}
	md := writeBlob(m)
	md.MediaType = ocispec.MediaTypeImageManifest
	md.Annotations = map[string]string{ocispec.AnnotationRefName: "test"}
	idx := ocispec.Index{Manifests: []ocispec.Descriptor{md}}
	idx.SchemaVersion = 2
	idx.MediaType = ocispec.MediaTypeImageIndex
	b, _ := json.Marshal(idx)
	if err := os.WriteFile(filepath.Join(layout, "index.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(layout, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(t.TempDir(), "bundle")
	out, err := exec.CommandContext(t.Context(), umoci, "unpack", "--image", layout+":test", bundle).CombinedOutput()
	if err != nil {
		t.Fatalf("umoci unpack: %v\n%s", err, out)
	}
	return treeOfDir(t, filepath.Join(bundle, "rootfs"))
}

// TestUmociOracle checks the oracle itself: umoci's unpack of the tricky image is the
// flattened tree testimage documents (so the export test compares against the right thing).
func TestUmociOracle(t *testing.T) {
	testutil.RequiresRoot(t)
	umoci := testutil.MustBin(t, "umoci")
	reg := distreg.Start(t)
	want := testimage.Tricky(t)
	reg.Push(t, "test/tricky:1", want)
	st := openStore(t)
	img, err := pull(t, st, reg.Ref("test/tricky:1"))
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	tr := umociUnpack(t, umoci, st, img)
	got := map[string]string{}
	for p, n := range tr {
		switch n.Type {
		case "dir":
			got[p] = "dir"
		case "symlink":
			got[p] = "->" + n.Link
		case "file":
			got[p] = n.Content
		}
	}
	for p, w := range testimage.TrickyResult {
		if w != "dir" && !strings.HasPrefix(w, "->") {
			s := sha256.Sum256([]byte(w))
			w = digest.NewDigestFromBytes(digest.SHA256, s[:]).Encoded()
		}
		if got[p] != w {
			t.Errorf("%s = %q, want %q", p, got[p], w)
		}
		delete(got, p)
	}
	for p := range got {
		t.Errorf("unexpected %s", p)
	}
	if tr["shared-link"].LinkGroup == "" || tr["shared-link"].LinkGroup != tr["cross-link"].LinkGroup {
		t.Errorf("shared-link and cross-link are not one inode: %+v, %+v", tr["shared-link"], tr["cross-link"])
	}
}

// checkDebianTree asserts that a flattened testimage.Debian shows the effect of every
// whiteout and opaque directory of its upper layers.
func checkDebianTree(t *testing.T, tr tree) {
	t.Helper()
	if len(tr) < 3000 {
		t.Errorf("only %d paths: not a Debian rootfs", len(tr))
	}
	for _, p := range []string{"etc/motd", "usr/share/man", "var/lib/apt/lists", "opt/app/data.txt", "usr/bin/perl", "usr/share/doc/bash", "usr/share/locale/af/LC_MESSAGES"} {
		if _, ok := tr[p]; ok {
			t.Errorf("%s survived its whiteout", p)
		}
	}
	for p, typ := range map[string]string{"bin": "symlink", "usr/bin/bash": "file", "srv": "file", "usr/share/locale/README": "file", "usr/share/doc/imgrun/README": "file", "opt/app/current": "symlink", "var/lib/apt": "dir"} {
		if tr[p].Type != typ {
			t.Errorf("%s is %+v, want a %s", p, tr[p], typ)
		}
	}
	for p := range tr {
		if d, ok := strings.CutPrefix(p, "usr/share/doc/"); ok && !strings.HasPrefix(d, "imgrun") {
			t.Errorf("%s: the opaque usr/share/doc still shows lower layers", p)
		}
	}
	if g := tr["usr/bin/perl5.36.0"].LinkGroup; g == "" || g != tr["opt/app/perl-link"].LinkGroup {
		t.Errorf("perl5.36.0 and opt/app/perl-link are not one inode: %+v %+v", tr["usr/bin/perl5.36.0"], tr["opt/app/perl-link"])
	}
	if n := tr["opt/app/suid"]; n.Mode&fs.ModeSetuid == 0 {
		t.Errorf("opt/app/suid lost its setuid bit: %+v", n)
	}
	if n := tr["opt/app/owned"]; n.UID != 1000 || n.GID != 1000 {
		t.Errorf("opt/app/owned is %d:%d, want 1000:1000", n.UID, n.GID)
	}
}
