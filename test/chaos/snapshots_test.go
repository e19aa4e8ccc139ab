//go:build chaos

package chaos

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imgrun/imgrun/pkg/layers"
	"github.com/imgrun/imgrun/pkg/rootfs"
)

// checkSnapshots composes, for every image in ROOT's index whose layer snapshots are all
// cached, its stack with overlayfs (as a run does) and compares the tree with the reference
// unpack; and checks that every snapshot directory is one some image's chain names: a killed
// build leaves nothing half-made under ROOT/snapshots.
func checkSnapshots(t *testing.T, root string, want map[string]string) {
	t.Helper()
	st, err := layers.Open(root)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	recs, err := st.Images(t.Context())
	if err != nil {
		t.Fatalf("images: %v", err)
	}
	known := map[string]bool{}
	for _, r := range recs {
		img, err := st.Load(t.Context(), r)
		if err != nil {
			t.Fatalf("load %s: %v", r.Descriptor.Digest, err)
		}
		var stack []string
		complete := true
		for _, ch := range rootfs.ChainIDs(img.Config.RootFS.DiffIDs) {
			known[ch.Encoded()] = true
			p := filepath.Join(root, "snapshots", ch.Encoded())
			if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
				complete = false
			}
			stack = append([]string{p}, stack...)
		}
		if !complete {
			continue
		}
		if len(stack) == 1 {
			stack = append(stack, t.TempDir())
		}
		mnt := t.TempDir()
		if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, "lowerdir="+strings.Join(stack, ":")); err != nil {
			t.Fatalf("mount the snapshots of %s: %v", r.Descriptor.Digest, err)
		}
		d := diffTrees(want, tree(t, mnt))
		unix.Unmount(mnt, unix.MNT_DETACH)
		if len(d) > 0 {
			finding(t, "the snapshots of %s differ from the reference unpack: %v", r.Descriptor.Digest, d)
		}
	}
	for _, n := range dirEntries(root, "snapshots") {
		if !known[strings.TrimSuffix(n, ".flat")] {
			finding(t, "ROOT/snapshots/%s belongs to no image", n)
		}
	}
}
