//go:build integration

package rootfs_test

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/imgrun/imgrun/internal/tartest"
	"github.com/imgrun/imgrun/internal/testutil"
	"github.com/imgrun/imgrun/pkg/rootfs"
)

// umociUnpack writes the layers as an OCI layout, runs `umoci unpack` on it and describes the
// resulting rootfs: a third, independent flattener to compare Export with.
func umociUnpack(t *testing.T, umoci string, tars [][]byte) map[string]string {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf.OS, cf.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	for _, data := range tars {
		gz := newGzLayer(data).gz
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(gz)), nil
		}, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.Append(img, mutate.Addendum{Layer: l, MediaType: types.OCILayer}); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	lp, err := layout.Write(filepath.Join(dir, "oci"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": "test",
	}), layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"})); err != nil {
		t.Fatal(err)
	}
	args := []string{"unpack", "--image", filepath.Join(dir, "oci") + ":test", filepath.Join(dir, "bundle")}
	if os.Geteuid() != 0 {
		args = append(args[:1], append([]string{"--rootless"}, args[1:]...)...)
	}
	if out, err := exec.CommandContext(t.Context(), umoci, args...).CombinedOutput(); err != nil {
		t.Fatalf("umoci %v: %v\n%s", args, err, out)
	}
	return diskTree(t, filepath.Join(dir, "bundle", "rootfs"))
}

// umociDiffers names the corpus cases where umoci is not an oracle: it applies a whiteout that
// follows entries of its own layer in tar order, as docker does, while imgrun follows the OCI
// image-spec (a whiteout hides only lower layers' content; Apply and Export agree on it, as
// TestExportMatchesFlatten checks).
var umociDiffers = map[string]string{
	"same-layer whiteout of a directory only written into": "umoci keeps the lower directory's mode and owner; the spec hides the lower directory, so the directory this layer writes into is new (0755 0:0)",
	"opaque directory below a directory only written into": "likewise for the directory holding the opaque one",
}

// TestExportMatchesUmoci compares Export with umoci unpack on the conformance corpus and on
// random images.
func TestExportMatchesUmoci(t *testing.T) {
	testutil.RequiresRoot(t)
	umoci := testutil.MustBin(t, "umoci")
	check := func(t *testing.T, ls []tl) {
		var tars [][]byte
		var layers []rootfs.Layer
		for _, l := range ls {
			tars = append(tars, tartest.Tar(l...))
			layers = append(layers, memLayer(tars[len(tars)-1]))
		}
		got := tarTree(t, exportBytes(t, layers))
		if d := diffMaps(got, umociUnpack(t, umoci, tars)); d != "" {
			t.Errorf("export differs from umoci unpack:\n%s", d)
		}
	}
	for _, tc := range trickyImages {
		t.Run(tc.name, func(t *testing.T) {
			if why, ok := umociDiffers[tc.name]; ok {
				t.Skip("umoci differs by design: " + why)
			}
			check(t, tc.layers)
		})
	}
	for seed := range 30 {
		t.Run("random", func(t *testing.T) { check(t, randomImageWith(rand.New(rand.NewPCG(uint64(seed), 7)), false)) })
	}
}
