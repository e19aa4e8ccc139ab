package registry

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// backend is what resolve needs from a source; registries, OCI layouts and docker
// archives each implement it, and share the decoding, verification and platform choice.
type backend interface {
	// top returns the document the reference names with its digest computed from the
	// bytes (and checked against a pinned digest), and the Content-Type it came with ("" if none).
	top(ctx context.Context, known KnownFunc) (desc ocispec.Descriptor, body []byte, contentType string, err error)
	// manifest returns a manifest's bytes by descriptor (unverified) and its Content-Type.
	manifest(ctx context.Context, desc ocispec.Descriptor) (body []byte, contentType string, err error)
	// smallBlob returns a config blob's bytes (unverified), at most MaxManifestSize.
	smallBlob(ctx context.Context, desc ocispec.Descriptor) ([]byte, error)
}

// resolve walks index → platform manifest → config for ref, verifying each document.
// A zero want means "the host's platform, but accept a single-platform image whatever its
// platform" (as docker does); a non-zero want is strict.
func resolve(ctx context.Context, b backend, ref Reference, want ocispec.Platform, known KnownFunc) (*Image, error) {
	strict := want.OS != "" || want.Architecture != ""
	if !strict {
		want = HostPlatform()
	}
	want = normalizePlatform(want)

	desc, body, ct, err := b.top(ctx, known)
	if err != nil {
		return nil, err
	}
	mt, err := classify(body, ct)
	if err != nil {
		return nil, err
	}
	desc.MediaType = mt
	img := &Image{Ref: ref}

	if isIndexType(mt) {
		idx, err := decodeIndex(body)
		if err != nil {
			return nil, err
		}
		top := ocispec.Descriptor{MediaType: mt, Digest: desc.Digest, Size: desc.Size}
		img.Index, img.IndexBytes = &top, body
		child, err := choosePlatform(idx, want)
		if err != nil {
			return nil, err
		}
		if isIndexType(child.MediaType) {
			return nil, fmt.Errorf("index entry %s is itself an index (nested indexes are not supported): %w", child.Digest, ErrUnsupportedManifest)
		}
		mbody, ok := knownBytes(known, child)
		mct := ""
		if !ok {
			if child.Size > MaxManifestSize {
				return nil, fmt.Errorf("manifest %s is %d bytes (limit %d): %w", child.Digest, child.Size, MaxManifestSize, ErrManifestTooLarge)
			}
			if mbody, mct, err = b.manifest(ctx, child); err != nil {
				return nil, err
			}
			if err := verifyBytes("manifest", mbody, child.Digest, child.Size); err != nil {
				return nil, err
			}
		}
		cmt, err := classify(mbody, mct)
		if err != nil {
			return nil, fmt.Errorf("manifest %s: %w", child.Digest, err)
		}
		if !isManifestType(cmt) {
			return nil, fmt.Errorf("index entry %s is a %s, not an image manifest: %w", child.Digest, cmt, ErrUnsupportedManifest)
		}
		if child.MediaType != "" && child.MediaType != cmt {
			return nil, fmt.Errorf("index says %s is %s but it is %s: %w", child.Digest, child.MediaType, cmt, ErrUnsupportedManifest)
		}
		desc = ocispec.Descriptor{MediaType: cmt, Digest: child.Digest, Size: int64(len(mbody))}
		body, mt = mbody, cmt
		if child.Platform != nil {
			img.Platform = normalizePlatform(*child.Platform)
		}
	}

	m, err := decodeManifest(body)
	if err != nil {
		return nil, err
	}
	if m.MediaType == "" {
		m.MediaType = mt
	}
	switch m.Config.MediaType {
	case ocispec.MediaTypeImageConfig, MediaTypeDockerConfig:
	default:
		return nil, fmt.Errorf("config media type %q: not a container image: %w", m.Config.MediaType, ErrUnsupportedManifest)
	}
	img.Descriptor, img.ManifestBytes, img.Manifest = desc, body, m

	cfgBytes, ok := knownBytes(known, m.Config)
	if !ok {
		if m.Config.Size > MaxManifestSize {
			return nil, fmt.Errorf("config %s is %d bytes (limit %d): %w", m.Config.Digest, m.Config.Size, MaxManifestSize, ErrManifestTooLarge)
		}
		if cfgBytes, err = b.smallBlob(ctx, m.Config); err != nil {
			return nil, err
		}
		if err := verifyBytes("config", cfgBytes, m.Config.Digest, m.Config.Size); err != nil {
			return nil, err
		}
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(cfgBytes, &cfg); err != nil {
		return nil, fmt.Errorf("decode config %s: %v: %w", m.Config.Digest, err, ErrUnsupportedManifest)
	}
	if n := len(cfg.RootFS.DiffIDs); n != len(m.Layers) {
		return nil, fmt.Errorf("manifest has %d layers but config lists %d diff_ids: %w", len(m.Layers), n, ErrUnsupportedManifest)
	}
	for i, d := range cfg.RootFS.DiffIDs {
		if err := d.Validate(); err != nil {
			return nil, fmt.Errorf("config diff_id %d %q: %v: %w", i, d, err, ErrUnsupportedManifest)
		}
	}
	img.ConfigBytes, img.Config = cfgBytes, cfg

	if img.Index == nil || img.Platform.OS == "" {
		// A single manifest, or an index entry without a platform: the config says.
		strict = strict || img.Index != nil
		have := normalizePlatform(cfg.Platform)
		if have.OS == "" || have.Architecture == "" {
			img.Platform = want
		} else {
			if strict && !platformMatches(want, have) {
				return nil, &PlatformError{Want: want, Available: []ocispec.Platform{have}}
			}
			img.Platform = ocispec.Platform{OS: have.OS, Architecture: have.Architecture, Variant: have.Variant}
		}
	}
	img.Descriptor.Platform = &ocispec.Platform{OS: img.Platform.OS, Architecture: img.Platform.Architecture, Variant: img.Platform.Variant}
	return img, nil
}

// choosePlatform picks the first selectable index entry for want, or a *PlatformError
// listing what is available.
func choosePlatform(idx ocispec.Index, want ocispec.Platform) (ocispec.Descriptor, error) {
	var avail []ocispec.Platform
	for _, d := range idx.Manifests {
		if !selectable(d) {
			continue
		}
		if platformMatches(want, *d.Platform) {
			return d, nil
		}
		p := normalizePlatform(*d.Platform)
		avail = append(avail, ocispec.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant})
	}
	// Like containerd, an entry that states no platform may match; its config decides.
	for _, d := range idx.Manifests {
		if d.Platform == nil && d.Annotations["vnd.docker.reference.type"] != "attestation-manifest" && !isIndexType(d.MediaType) {
			return d, nil
		}
	}
	return ocispec.Descriptor{}, &PlatformError{Want: want, Available: avail}
}

// knownBytes asks known for d and re-verifies what it returns; anything that does not
// match is ignored (and fetched again).
func knownBytes(known KnownFunc, d ocispec.Descriptor) ([]byte, bool) {
	if known == nil {
		return nil, false
	}
	b, ok := known(d.Digest)
	if !ok || digest.FromBytes(b) != d.Digest || (d.Size > 0 && int64(len(b)) != d.Size) {
		return nil, false
	}
	return b, true
}
