package layers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgrun/imgrun/pkg/registry"
)

// Image is a cached image: its index.json record, manifest and config. Its layers are in
// the store.
type Image struct {
	Record      Record
	Manifest    ocispec.Manifest
	Config      ocispec.Image
	ConfigBytes []byte
	store       *Store
}

// Layer is one layer of an Image: its blob descriptor and the digest of its uncompressed
// tar (from the config's rootfs.diff_ids).
type Layer struct {
	Descriptor ocispec.Descriptor
	DiffID     digest.Digest
	store      *Store
	grow       *growth // set for a layer handed over by PullOptions.LayerStarted
}

// Layers returns the image's layers, bottom first.
func (img *Image) Layers() []Layer {
	out := make([]Layer, len(img.Manifest.Layers))
	for i, d := range img.Manifest.Layers {
		out[i] = Layer{Descriptor: d, DiffID: img.Config.RootFS.DiffIDs[i], store: img.store}
	}
	return out
}

// Size is the sum of the compressed layer sizes.
func (img *Image) Size() int64 {
	var n int64
	for _, l := range img.Manifest.Layers {
		n += l.Size
	}
	return n
}

// Uncompressed returns the layer's verified, uncompressed tar stream (see
// Store.Uncompressed). Layer satisfies pkg/rootfs's Layer interface.
func (l Layer) Uncompressed(ctx context.Context) (io.ReadCloser, error) {
	if l.store == nil {
		return nil, errors.New("layer not from a store")
	}
	if l.grow != nil && !l.grow.committed() {
		rc, ok, err := l.grow.open(ctx)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", l.Descriptor.Digest, err)
		}
		if ok {
			if err := validDigest(l.DiffID); err != nil {
				rc.Close()
				return nil, fmt.Errorf("layer %s: diffID: %w", l.Descriptor.Digest, err)
			}
			dec, err := decompress(ctx, rc, l.DiffID)
			if err != nil {
				return nil, fmt.Errorf("layer %s: %w", l.Descriptor.Digest, l.grow.explain(ctx, err))
			}
			return &followedStream{ReadCloser: dec, ctx: ctx, g: l.grow}, nil
		}
		// Ended (or restarted) before we got here: read the committed blob.
		if err := l.grow.wait(ctx); err != nil {
			return nil, fmt.Errorf("layer %s: download: %w", l.Descriptor.Digest, err)
		}
	}
	return l.store.Uncompressed(ctx, l.Descriptor, l.DiffID)
}

// Pinned is the reference pinned to a digest, NAME@sha256:…: the digest of the index
// the tag pointed to when there was one (as docker prints it), else of the manifest.
func (r Record) Pinned() string {
	name := r.Ref
	if ref, err := registry.ParseReference(r.Ref); err == nil {
		name = ref.Name()
	}
	d := r.Descriptor.Digest
	if r.Index != "" {
		d = r.Index
	}
	return name + "@" + d.String()
}

// Load reads a cached image from the store only (no network). It fails with ErrNotCached
// when a blob it needs is missing (e.g. removed by verify as corrupt).
func (s *Store) Load(ctx context.Context, rec Record) (*Image, error) {
	img, err := s.load(ctx, rec)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", rec.Ref, err)
	}
	return img, nil
}

func (s *Store) load(ctx context.Context, rec Record) (*Image, error) {
	mb, err := s.ReadBlob(ctx, rec.Descriptor.Digest, registry.MaxManifestSize)
	if err != nil {
		return nil, notCached(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", rec.Descriptor.Digest, err)
	}
	if err := validDigest(m.Config.Digest); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cb, err := s.ReadBlob(ctx, m.Config.Digest, registry.MaxManifestSize)
	if err != nil {
		return nil, notCached(err)
	}
	var c ocispec.Image
	if err := json.Unmarshal(cb, &c); err != nil {
		return nil, fmt.Errorf("config %s: %w", m.Config.Digest, err)
	}
	if err := checkImage(&m, &c); err != nil {
		return nil, err
	}
	for _, l := range m.Layers {
		if !s.Has(l.Digest) {
			return nil, fmt.Errorf("layer %s missing: %w", l.Digest, ErrNotCached)
		}
	}
	return &Image{Record: rec, Manifest: m, Config: c, ConfigBytes: cb, store: s}, nil
}

// notCached adds ErrNotCached to a missing or corrupt blob's error.
func notCached(err error) error {
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrDigestMismatch) {
		return fmt.Errorf("%w: %w", ErrNotCached, err)
	}
	return err
}
