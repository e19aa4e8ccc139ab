package layers

import (
	"fmt"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker's layer media types (image-spec has only the OCI ones).
const (
	mediaTypeDockerLayer        = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	mediaTypeDockerLayerPlain   = "application/vnd.docker.image.rootfs.diff.tar"
	mediaTypeDockerForeignLayer = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
)

// checkLayerType refuses layers imgrun cannot fetch or unpack: encrypted ones, foreign
// (non-distributable) ones without URLs, and anything that is not a layer tar.
func checkLayerType(d ocispec.Descriptor) error {
	mt := d.MediaType
	if strings.Contains(mt, "+encrypted") {
		return fmt.Errorf("layer %s: encrypted layers (%s) are not supported: %w", d.Digest, mt, ErrUnsupportedLayer)
	}
	switch mt {
	case ocispec.MediaTypeImageLayer, ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageLayerZstd,
		mediaTypeDockerLayer, mediaTypeDockerLayerPlain:
		return nil
	case ocispec.MediaTypeImageLayerNonDistributable, //nolint:staticcheck // still found in the wild
		ocispec.MediaTypeImageLayerNonDistributableGzip, //nolint:staticcheck
		ocispec.MediaTypeImageLayerNonDistributableZstd, //nolint:staticcheck
		mediaTypeDockerForeignLayer:
		if len(d.URLs) == 0 {
			return fmt.Errorf("layer %s: foreign layer (%s) without URLs: %w", d.Digest, mt, ErrUnsupportedLayer)
		}
		// Many registries serve foreign layers by digest too; Fetch asks the registry,
		// never the URLs (they are an SSRF and credential-leak vector).
		return nil
	}
	return fmt.Errorf("layer %s: media type %q is not a layer imgrun can unpack: %w", d.Digest, mt, ErrUnsupportedLayer)
}

// checkImage checks what Pull and Load rely on: supported layer types and one diffID per
// layer (a layer without its diffID could not be verified after decompression).
func checkImage(m *ocispec.Manifest, c *ocispec.Image) error {
	for _, l := range m.Layers {
		if err := validDigest(l.Digest); err != nil {
			return fmt.Errorf("layer: %w", err)
		}
		if err := checkLayerType(l); err != nil {
			return err
		}
	}
	if len(m.Layers) != len(c.RootFS.DiffIDs) {
		return fmt.Errorf("manifest has %d layers but config has %d diff_ids: %w",
			len(m.Layers), len(c.RootFS.DiffIDs), ErrUnsupportedLayer)
	}
	for _, d := range c.RootFS.DiffIDs {
		if err := validDigest(d); err != nil {
			return fmt.Errorf("config diff_id: %w", err)
		}
	}
	if err := validDigest(m.Config.Digest); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}
