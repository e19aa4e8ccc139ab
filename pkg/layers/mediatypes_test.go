package layers

import (
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestCheckImage(t *testing.T) {
	layer := func(mt string, urls ...string) ocispec.Descriptor {
		return ocispec.Descriptor{MediaType: mt, Digest: digest.FromString(mt), Size: 1, URLs: urls}
	}
	diff := digest.FromString("diff")
	tests := []struct {
		name    string
		layers  []ocispec.Descriptor
		diffIDs []digest.Digest
		want    error
	}{
		{"oci gzip", []ocispec.Descriptor{layer(ocispec.MediaTypeImageLayerGzip)}, []digest.Digest{diff}, nil},
		{"oci zstd and plain", []ocispec.Descriptor{layer(ocispec.MediaTypeImageLayerZstd), layer(ocispec.MediaTypeImageLayer)}, []digest.Digest{diff, diff}, nil},
		{"docker", []ocispec.Descriptor{layer(mediaTypeDockerLayer)}, []digest.Digest{diff}, nil},
		{"docker foreign with URLs", []ocispec.Descriptor{layer(mediaTypeDockerForeignLayer, "https://example.invalid/l")}, []digest.Digest{diff}, nil},
		{"docker foreign without URLs", []ocispec.Descriptor{layer(mediaTypeDockerForeignLayer)}, []digest.Digest{diff}, ErrUnsupportedLayer},
		{"oci non-distributable without URLs", []ocispec.Descriptor{layer("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip")}, []digest.Digest{diff}, ErrUnsupportedLayer},
		{"encrypted", []ocispec.Descriptor{layer(ocispec.MediaTypeImageLayerGzip + "+encrypted")}, []digest.Digest{diff}, ErrUnsupportedLayer},
		{"not a layer", []ocispec.Descriptor{layer("application/vnd.cncf.helm.chart.content.v1.tar+gzip")}, []digest.Digest{diff}, ErrUnsupportedLayer},
		{"fewer diff_ids", []ocispec.Descriptor{layer(ocispec.MediaTypeImageLayer), layer(ocispec.MediaTypeImageLayerGzip)}, []digest.Digest{diff}, ErrUnsupportedLayer},
		{"more diff_ids", []ocispec.Descriptor{layer(ocispec.MediaTypeImageLayer)}, []digest.Digest{diff, diff}, ErrUnsupportedLayer},
		{"bad diff_id", []ocispec.Descriptor{layer(ocispec.MediaTypeImageLayer)}, []digest.Digest{"sha256:../x"}, ErrInvalidDigest},
		{"bad layer digest", []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayer, Digest: "sha256:../../x"}}, []digest.Digest{diff}, ErrInvalidDigest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &ocispec.Manifest{Config: descOf(ocispec.MediaTypeImageConfig, []byte("{}")), Layers: tc.layers}
			c := &ocispec.Image{RootFS: ocispec.RootFS{Type: "layers", DiffIDs: tc.diffIDs}}
			err := checkImage(m, c)
			if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
				t.Errorf("checkImage = %v, want %v", err, tc.want)
			}
		})
	}
}
