package registry

import (
	"fmt"
	"runtime"
	"slices"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ParsePlatform parses os/arch[/variant] ("linux/amd64", "linux/arm64/v8", "linux/arm/v7").
// The result is normalized: arm64/v8 becomes arm64 with an empty variant, arm without a
// variant becomes arm/v7, and common aliases (x86_64, aarch64) map to Go's names.
// Errors wrap ErrBadReference.
func ParsePlatform(s string) (ocispec.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || slices.Contains(parts, "") {
		return ocispec.Platform{}, fmt.Errorf("invalid platform %q: want os/arch[/variant]: %w", s, ErrBadReference)
	}
	p := ocispec.Platform{OS: strings.ToLower(parts[0]), Architecture: strings.ToLower(parts[1])}
	if len(parts) == 3 {
		p.Variant = strings.ToLower(parts[2])
	}
	return normalizePlatform(p), nil
}

// HostPlatform is the platform images run on here: always linux (imgrun runs Linux
// images), with the host's CPU architecture.
func HostPlatform() ocispec.Platform {
	return normalizePlatform(ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH})
}

// FormatPlatform renders os/arch[/variant].
func FormatPlatform(p ocispec.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// normalizePlatform maps aliases to one spelling so that equal platforms compare equal.
func normalizePlatform(p ocispec.Platform) ocispec.Platform {
	p.OS = strings.ToLower(p.OS)
	p.Architecture = strings.ToLower(p.Architecture)
	p.Variant = strings.ToLower(p.Variant)
	switch p.Architecture {
	case "x86_64", "x86-64":
		p.Architecture = "amd64"
	case "i386", "i686":
		p.Architecture = "386"
	case "aarch64", "arm64":
		p.Architecture = "arm64"
		// arm64 means arm64/v8: registries publish both spellings.
		if p.Variant == "v8" || p.Variant == "8" {
			p.Variant = ""
		}
	case "armhf", "armel", "arm":
		switch {
		case p.Architecture == "armel" && p.Variant == "":
			p.Variant = "v6"
		case p.Variant == "":
			p.Variant = "v7"
		case len(p.Variant) == 1 && p.Variant[0] >= '5' && p.Variant[0] <= '8':
			p.Variant = "v" + p.Variant
		}
		p.Architecture = "arm"
	case "amd64":
		if p.Variant == "v1" {
			p.Variant = ""
		}
	}
	return p
}

// platformMatches reports whether an index entry's platform is the wanted one.
func platformMatches(want, have ocispec.Platform) bool {
	w, h := normalizePlatform(want), normalizePlatform(have)
	return w.OS == h.OS && w.Architecture == h.Architecture && w.Variant == h.Variant
}

// selectable reports whether an index entry may ever be chosen: attestation manifests
// and entries without a real platform (unknown/unknown) never are.
func selectable(d ocispec.Descriptor) bool {
	if d.Annotations["vnd.docker.reference.type"] == "attestation-manifest" {
		return false
	}
	if d.Platform == nil {
		return false
	}
	p := d.Platform
	return p.OS != "" && p.Architecture != "" && p.OS != "unknown" && p.Architecture != "unknown"
}
