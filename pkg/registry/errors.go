package registry

import (
	"errors"
	"fmt"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Sentinel errors. Every error this package returns for one of these conditions wraps the
// matching sentinel, so callers decide with errors.Is and never match strings.
var (
	// ErrBadReference: the image reference (or platform string) cannot be parsed.
	ErrBadReference = errors.New("bad reference")
	// ErrNotFound: the repository, tag, manifest or blob does not exist.
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized: the registry refused the credentials (or their absence).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrNoMatchingPlatform: the image has no manifest for the requested platform.
	// The concrete error is a *PlatformError that lists what is available.
	ErrNoMatchingPlatform = errors.New("no matching platform")
	// ErrUnsupportedManifest: schema1, an unknown media type, or a malformed or ambiguous document.
	ErrUnsupportedManifest = errors.New("unsupported manifest")
	// ErrDigestMismatch: fetched bytes do not hash to the digest that names them.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrRateLimited: the registry kept answering 429 Too Many Requests after all retries.
	ErrRateLimited = errors.New("rate limited")
	// ErrManifestTooLarge: a manifest, index or config is bigger than MaxManifestSize.
	ErrManifestTooLarge = errors.New("manifest too large")
)

// MaxManifestSize bounds manifests, indexes and image configs (docker uses the same 4 MiB limit).
const MaxManifestSize = 4 << 20

// PlatformError reports that no manifest matched the wanted platform. Available lists the
// platforms the image does offer (attestation and unknown entries excluded).
type PlatformError struct {
	Want      ocispec.Platform
	Available []ocispec.Platform
}

func (e *PlatformError) Error() string {
	avail := make([]string, len(e.Available))
	for i, p := range e.Available {
		avail[i] = FormatPlatform(p)
	}
	list := strings.Join(avail, ", ")
	if list == "" {
		list = "none"
	}
	return fmt.Sprintf("no image for platform %s (available: %s)", FormatPlatform(e.Want), list)
}

// Is makes errors.Is(err, ErrNoMatchingPlatform) true.
func (e *PlatformError) Is(target error) bool { return target == ErrNoMatchingPlatform }
