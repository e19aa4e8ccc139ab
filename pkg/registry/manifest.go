package registry

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Media types this package understands.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
	mediaTypeSchema1            = "application/vnd.docker.distribution.manifest.v1+json"
	mediaTypeSchema1Signed      = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

// acceptManifests is the Accept header for manifest requests, in order of preference.
var acceptManifests = ocispec.MediaTypeImageIndex + ", " + MediaTypeDockerManifestList + ", " +
	ocispec.MediaTypeImageManifest + ", " + MediaTypeDockerManifest

func isIndexType(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == MediaTypeDockerManifestList
}

func isManifestType(mt string) bool {
	return mt == ocispec.MediaTypeImageManifest || mt == MediaTypeDockerManifest
}

func isKnownType(mt string) bool {
	return isIndexType(mt) || isManifestType(mt) || mt == mediaTypeSchema1 || mt == mediaTypeSchema1Signed
}

// probe holds just the fields needed to tell what kind of document a manifest is.
type probe struct {
	SchemaVersion int             `json:"schemaVersion"`
	MediaType     string          `json:"mediaType"`
	Config        json.RawMessage `json:"config"`
	Layers        json.RawMessage `json:"layers"`
	Manifests     json.RawMessage `json:"manifests"`
	FSLayers      json.RawMessage `json:"fsLayers"`
}

// classify decides what a manifest document is, refusing schema1 and ambiguous documents
// (CVE-2021-41190: a document with both "manifests" and "layers"/"config", or whose
// mediaType differs from the Content-Type it was served with). contentType may be "".
// It returns the effective media type.
func classify(body []byte, contentType string) (string, error) {
	var p probe
	if err := json.Unmarshal(body, &p); err != nil {
		return "", fmt.Errorf("manifest is not valid JSON: %v: %w", err, ErrUnsupportedManifest)
	}
	if contentType == mediaTypeSchema1 || contentType == mediaTypeSchema1Signed ||
		p.MediaType == mediaTypeSchema1 || p.MediaType == mediaTypeSchema1Signed ||
		p.SchemaVersion == 1 || len(p.FSLayers) > 0 {
		return "", fmt.Errorf("image uses the Docker schema1 manifest format, which is deprecated and not supported (it cannot bind layers to a config); re-push it with a current docker or buildx: %w", ErrUnsupportedManifest)
	}
	if p.SchemaVersion != 2 {
		return "", fmt.Errorf("manifest schemaVersion %d is not supported (want 2): %w", p.SchemaVersion, ErrUnsupportedManifest)
	}
	hasManifests := present(p.Manifests)
	if hasManifests && (present(p.Layers) || present(p.Config)) {
		return "", fmt.Errorf("ambiguous document has both \"manifests\" and \"layers\"/\"config\" (refused, see CVE-2021-41190): %w", ErrUnsupportedManifest)
	}
	ct := contentType
	if !isKnownType(ct) {
		ct = "" // application/json, octet-stream, …: say nothing about the type
	}
	if p.MediaType != "" && ct != "" && p.MediaType != ct {
		return "", fmt.Errorf("document mediaType %q differs from its Content-Type %q (refused, see CVE-2021-41190): %w", p.MediaType, ct, ErrUnsupportedManifest)
	}
	mt := p.MediaType
	if mt == "" {
		mt = ct
	}
	if mt == "" {
		// OCI allows omitting mediaType; decide by structure.
		if hasManifests {
			mt = ocispec.MediaTypeImageIndex
		} else {
			mt = ocispec.MediaTypeImageManifest
		}
	}
	switch {
	case isIndexType(mt):
		if present(p.Layers) || present(p.Config) {
			return "", fmt.Errorf("index (%s) has \"layers\"/\"config\": %w", mt, ErrUnsupportedManifest)
		}
	case isManifestType(mt):
		if hasManifests {
			return "", fmt.Errorf("image manifest (%s) has \"manifests\": %w", mt, ErrUnsupportedManifest)
		}
	default:
		return "", fmt.Errorf("manifest media type %q is not supported (want an OCI or Docker schema2 manifest or index): %w", mt, ErrUnsupportedManifest)
	}
	return mt, nil
}

func present(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && !bytes.Equal(raw, []byte("null"))
}

// decodeIndex parses an index and validates every entry's digest and size.
func decodeIndex(body []byte) (ocispec.Index, error) {
	var idx ocispec.Index
	if err := json.Unmarshal(body, &idx); err != nil {
		return idx, fmt.Errorf("decode index: %v: %w", err, ErrUnsupportedManifest)
	}
	for i, d := range idx.Manifests {
		if err := checkDescriptor(d); err != nil {
			return idx, fmt.Errorf("index entry %d: %w", i, err)
		}
	}
	return idx, nil
}

// decodeManifest parses an image manifest and validates its config and layer descriptors.
func decodeManifest(body []byte) (ocispec.Manifest, error) {
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return m, fmt.Errorf("decode manifest: %v: %w", err, ErrUnsupportedManifest)
	}
	if err := checkDescriptor(m.Config); err != nil {
		return m, fmt.Errorf("manifest config: %w", err)
	}
	for i, l := range m.Layers {
		if err := checkDescriptor(l); err != nil {
			return m, fmt.Errorf("manifest layer %d: %w", i, err)
		}
	}
	return m, nil
}

// checkDescriptor: a digest is validated before it is ever used in a URL or a path (B6).
func checkDescriptor(d ocispec.Descriptor) error {
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("invalid digest %q: %v: %w", d.Digest, err, ErrUnsupportedManifest)
	}
	if d.Digest.Algorithm() != digest.SHA256 {
		return fmt.Errorf("digest %s: only sha256 is supported: %w", d.Digest, ErrUnsupportedManifest)
	}
	if d.Size < 0 {
		return fmt.Errorf("descriptor %s has negative size %d: %w", d.Digest, d.Size, ErrUnsupportedManifest)
	}
	return nil
}

// verifyBytes checks b against want (and its size, when size > 0).
func verifyBytes(what string, b []byte, want digest.Digest, size int64) error {
	if size > 0 && int64(len(b)) != size {
		return fmt.Errorf("%s %s: got %d bytes, descriptor says %d: %w", what, want, len(b), size, ErrDigestMismatch)
	}
	if got := digest.FromBytes(b); got != want {
		return fmt.Errorf("%s: got %s, want %s: %w", what, got, want, ErrDigestMismatch)
	}
	return nil
}
