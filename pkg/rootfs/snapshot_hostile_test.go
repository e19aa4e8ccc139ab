package rootfs

import (
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"
)

// TestHostileSnapshots builds every image of testdata/hostile as snapshots (each layer applied
// on its own, then completed against the ones below) in a cache beside the victim files, and
// checks that nothing outside the cache changed, whatever the outcome.
func TestHostileSnapshots(t *testing.T) {
	requiresRoot(t)
	var built, refused, fellBack int
	for _, c := range hostileCases {
		t.Run(c.name, func(t *testing.T) {
			tmp, root := victimDir(t)
			before := snapshot(t, tmp, root)
			var layers []Layer
			var ids []digest.Digest
			for _, data := range hostileLayers(t, c) {
				layers = append(layers, bytesLayer(data))
				ids = append(ids, digest.FromBytes(data))
			}
			cache, err := OpenCache(root)
			if err != nil {
				t.Fatal(err)
			}
			_, release, err := cache.Snapshots(t.Context(), ids, layers)
			switch {
			case err == nil:
				release()
				built++
			case errors.Is(err, ErrNeedsLowers):
				fellBack++
			default:
				refused++
				t.Logf("error: %v", err)
			}
			assertUnchanged(t, before, snapshot(t, tmp, root))
		})
	}
	t.Logf("%d built, %d refused, %d need a flat tree", built, refused, fellBack)
}
