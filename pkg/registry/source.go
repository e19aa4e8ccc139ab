package registry

import (
	"context"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Source is where an image's manifests and blobs come from: a registry (with its mirrors),
// an OCI image layout or a docker-archive tarball. Client.Open returns one.
type Source interface {
	Reference() Reference
	// Resolve returns the platform manifest and config of the reference. known returns bytes the
	// caller already holds verified (by digest): a tag whose digest is still current then costs one
	// manifest HEAD and no GET; a digest reference that is known costs no request at all.
	// known may be nil.
	Resolve(ctx context.Context, platform ocispec.Platform, known KnownFunc) (*Image, error)
	// Fetch returns the raw, unverified bytes of a blob from offset (a Range request when offset > 0);
	// start is the offset the stream really begins at (0 when the server ignored the range).
	Fetch(ctx context.Context, desc ocispec.Descriptor, offset int64) (rc io.ReadCloser, start int64, err error)
}

// KnownFunc returns the verified bytes of a manifest, index or config the caller already
// holds, or false. Resolve still re-checks the bytes against the digest.
type KnownFunc func(digest.Digest) ([]byte, bool)

// Image is a resolved image: the platform manifest and its config, verified against their digests.
type Image struct {
	Ref           Reference
	Platform      ocispec.Platform
	Index         *ocispec.Descriptor // what the tag pointed to, when it was an index / manifest list
	IndexBytes    []byte
	Descriptor    ocispec.Descriptor // the platform manifest (mediaType, digest, size)
	ManifestBytes []byte
	Manifest      ocispec.Manifest
	ConfigBytes   []byte
	Config        ocispec.Image
}
