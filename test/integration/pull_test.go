//go:build integration

package integration

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/imgrun/imgrun/internal/distreg"
	"github.com/imgrun/imgrun/internal/testimage"
)

// TestPull pulls realistic images from the real distribution registry, then pulls them
// again and asserts that the second pull sends no blob request.
func TestPull(t *testing.T) {
	reg := distreg.Start(t)
	tests := []struct {
		name  string
		repo  string
		image func(testing.TB) v1.Image
	}{
		{"busybox OCI", "test/busybox:1.35", testimage.Busybox},
		{"debian docker schema2", "test/debian:bookworm", testimage.Debian},
		{"tricky whiteouts", "test/tricky:1", testimage.Tricky},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.image(t)
			reg.Push(t, tt.repo, want)
			st := openStore(t)
			before := blobGETs(reg.Requests())
			img, err := pull(t, st, reg.Ref(tt.repo))
			if err != nil {
				t.Fatalf("pull: %v", err)
			}
			checkImage(t, img, want)
			m, _ := want.Manifest()
			if got, min := blobGETs(reg.Requests())-before, len(m.Layers)+1; got < min {
				t.Errorf("first pull sent %d blob GETs, want at least %d (layers and config)", got, min)
			}

			before = blobGETs(reg.Requests())
			again, err := pull(t, st, reg.Ref(tt.repo))
			if err != nil {
				t.Fatalf("second pull: %v", err)
			}
			if again.Record.Descriptor.Digest != img.Record.Descriptor.Digest {
				t.Errorf("second pull got %s, want %s", again.Record.Descriptor.Digest, img.Record.Descriptor.Digest)
			}
			if n := blobGETs(reg.Requests()) - before; n != 0 {
				t.Errorf("second pull sent %d blob GETs, want 0", n)
			}
		})
	}
}
