package rootfs_test

import (
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/imgrun/imgrun/internal/testimage"
	"github.com/imgrun/imgrun/internal/testreg"
	"github.com/imgrun/imgrun/pkg/layers"
	"github.com/imgrun/imgrun/pkg/registry"
	"github.com/imgrun/imgrun/pkg/rootfs"
)

// TestExportFromStore pulls an image from an in-process registry into a real layer store
// and checks Export, Flatten and the cache on its layers (gzip, diffIDs checked at EOF).
func TestExportFromStore(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a registry")
	}
	reg := testreg.New(t)
	reg.Push(t, "tricky:1", testimage.Tricky(t))
	c, err := registry.New(registry.WithKeychain(authn.NewMultiKeychain()))
	if err != nil {
		t.Fatal(err)
	}
	ref, err := registry.ParseReference(reg.Ref("tricky:1"))
	if err != nil {
		t.Fatal(err)
	}
	src, err := c.Open(ref)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	store, err := layers.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	img, err := store.Pull(t.Context(), src, layers.PullOptions{Platform: registry.HostPlatform()})
	if err != nil {
		t.Fatal(err)
	}
	var ls []rootfs.Layer
	for _, l := range img.Layers() {
		ls = append(ls, l)
	}
	exported := tarTree(t, exportBytes(t, ls))
	if d := diffMaps(exported, tarTree(t, exportBytes(t, testimageLayers(t, testimage.TrickyLayers())))); d != "" {
		t.Errorf("export from the store differs from the in-memory export:\n%s", d)
	}
	if d := diffMaps(exported, flattenTree(t, ls)); d != "" {
		t.Errorf("export differs from Flatten:\n%s", d)
	}
	cache, err := rootfs.OpenCache(root)
	if err != nil {
		t.Fatal(err)
	}
	p, release, err := cache.Use(t.Context(), img.Record.Descriptor.Digest, ls)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if d := diffMaps(exported, diskTree(t, p)); d != "" {
		t.Errorf("cached tree differs from the export:\n%s", d)
	}
}
