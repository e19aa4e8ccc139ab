package registry

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
)

// Transport says where a Reference points: a registry, an OCI image layout directory or a
// `docker save` archive.
type Transport string

const (
	TransportRegistry      Transport = ""               // a distribution registry (the default)
	TransportOCI           Transport = "oci"            // oci:DIR[:TAG], an OCI image layout
	TransportDockerArchive Transport = "docker-archive" // docker-archive:FILE, a `docker save` tarball
)

// DockerHub is the registry host Docker Hub references normalize to.
const DockerHub = "index.docker.io"

// Reference names an image. Registry references are normalized the way docker does it:
// "node" is index.docker.io/library/node:latest.
type Reference struct {
	Transport  Transport
	Registry   string        // "index.docker.io" for Docker Hub
	Repository string        // "library/node"
	Tag        string        // "latest" unless a digest-only reference; oci: the optional TAG
	Digest     digest.Digest // pinned digest, verified against what is fetched
	Path       string        // oci:/docker-archive: file or directory (absolute)
}

// ParseReference parses an image reference with docker's rules, or an `oci:DIR[:TAG]` /
// `docker-archive:FILE` reference. Errors wrap ErrBadReference and name what is wrong.
func ParseReference(s string) (Reference, error) {
	switch {
	case strings.HasPrefix(s, "oci:"):
		return parseOCIRef(s)
	case strings.HasPrefix(s, "docker-archive:"):
		p := strings.TrimPrefix(s, "docker-archive:")
		if p == "" {
			return Reference{}, badRef(s, "docker-archive: needs a file path")
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return Reference{}, badRef(s, err.Error())
		}
		return Reference{Transport: TransportDockerArchive, Path: abs}, nil
	}
	return parseRegistryRef(s)
}

func parseOCIRef(s string) (Reference, error) {
	rest := strings.TrimPrefix(s, "oci:")
	dir, tag := rest, ""
	// Like skopeo: the tag is whatever follows the first colon (it may be a full
	// reference such as index.docker.io/library/node:22), unless the whole string names
	// an existing directory.
	if i := strings.IndexByte(rest, ':'); i >= 0 {
		if fi, err := os.Stat(rest); err != nil || !fi.IsDir() {
			dir, tag = rest[:i], rest[i+1:]
			if tag == "" {
				return Reference{}, badRef(s, "empty tag after ':'")
			}
		}
	}
	if dir == "" {
		return Reference{}, badRef(s, "oci: needs a directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Reference{}, badRef(s, err.Error())
	}
	return Reference{Transport: TransportOCI, Path: abs, Tag: tag}, nil
}

func parseRegistryRef(s string) (Reference, error) {
	if s == "" {
		return Reference{}, badRef(s, "empty reference")
	}
	if strings.TrimSpace(s) != s || strings.ContainsFunc(s, unicode.IsSpace) {
		return Reference{}, badRef(s, "contains whitespace")
	}
	if strings.Contains(s, "://") {
		return Reference{}, badRef(s, "a reference has no URL scheme (write host/repo:tag)")
	}
	base, dgst, hasDigest := strings.Cut(s, "@")
	var d digest.Digest
	if hasDigest {
		if strings.Contains(dgst, "@") {
			return Reference{}, badRef(s, "more than one '@'")
		}
		d = digest.Digest(dgst)
		if err := d.Validate(); err != nil {
			return Reference{}, badRef(s, fmt.Sprintf("invalid digest %q: %v", dgst, err))
		}
		if d.Algorithm() != digest.SHA256 {
			return Reference{}, badRef(s, fmt.Sprintf("digest algorithm %q is not supported (only sha256)", d.Algorithm()))
		}
	}
	if base == "" {
		return Reference{}, badRef(s, "missing repository name")
	}
	// Split off the registry host the way docker does: the first path element is a host
	// when it contains '.' or ':' or is "localhost".
	hostPart, repoPart := "", base
	if first, rest, ok := strings.Cut(base, "/"); ok && (first == "localhost" || strings.ContainsAny(first, ".:")) {
		hostPart, repoPart = first, rest
	}
	repoOnly, tag := repoPart, ""
	if i := strings.LastIndexByte(repoPart, ':'); i >= 0 {
		repoOnly, tag = repoPart[:i], repoPart[i+1:]
		if tag == "" {
			return Reference{}, badRef(s, "empty tag after ':'")
		}
	}
	if repoOnly == "" {
		return Reference{}, badRef(s, "missing repository name")
	}
	if strings.ToLower(repoOnly) != repoOnly {
		return Reference{}, badRef(s, "repository name must be lowercase")
	}
	for _, c := range strings.Split(repoOnly, "/") {
		if c == "" {
			return Reference{}, badRef(s, "empty path component in repository name")
		}
		if !validComponent(c) {
			return Reference{}, badRef(s, fmt.Sprintf("invalid repository path component %q (allowed: a-z 0-9 separated by '.', '_', '__' or '-')", c))
		}
	}
	if tag != "" && !validTag(tag) {
		return Reference{}, badRef(s, fmt.Sprintf("invalid tag %q (allowed: up to 128 of A-Z a-z 0-9 _ . -, not starting with '.' or '-')", tag))
	}
	// ggcr normalizes docker.io → index.docker.io and adds library/; it also validates the host.
	nameStr := repoOnly
	if hostPart != "" {
		nameStr = hostPart + "/" + repoOnly
	}
	repo, err := name.NewRepository(nameStr)
	if err != nil {
		return Reference{}, badRef(s, err.Error())
	}
	// Checked after normalization (library/ added), so that every reference that parses
	// prints as one that parses back to itself.
	if len(repo.RepositoryStr()) > 255 {
		return Reference{}, badRef(s, "repository name longer than 255 characters")
	}
	ref := Reference{
		Registry:   repo.RegistryStr(),
		Repository: repo.RepositoryStr(),
		Tag:        tag,
		Digest:     d,
	}
	if ref.Tag == "" && ref.Digest == "" {
		ref.Tag = "latest"
	}
	return ref, nil
}

// validComponent: docker's path-component grammar [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*.
func validComponent(c string) bool {
	alnum := func(b byte) bool { return b >= 'a' && b <= 'z' || b >= '0' && b <= '9' }
	if !alnum(c[0]) || !alnum(c[len(c)-1]) {
		return false
	}
	for i := 0; i < len(c); i++ {
		b := c[i]
		if alnum(b) {
			continue
		}
		switch {
		case b == '-':
			// a run of dashes between alphanumerics
			if c[i+1] != '-' && !alnum(c[i+1]) {
				return false
			}
		case b == '.' || b == '_':
			// '.', '_' or '__' only: the next byte must be alnum, or '_' followed by alnum.
			if b == '_' && c[i+1] == '_' {
				i++
			}
			if !alnum(c[i+1]) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// validTag: docker's tag grammar [\w][\w.-]{0,127}.
func validTag(t string) bool {
	if len(t) > 128 {
		return false
	}
	for i := 0; i < len(t); i++ {
		b := t[i]
		word := b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_'
		if i == 0 && !word {
			return false
		}
		if !word && b != '.' && b != '-' {
			return false
		}
	}
	return true
}

func badRef(s, why string) error {
	return &badRefError{fmt.Sprintf("invalid reference %q: %s", s, why)}
}

// badRefError reads as one line naming what is wrong, and matches ErrBadReference.
type badRefError struct{ msg string }

func (e *badRefError) Error() string        { return e.msg }
func (e *badRefError) Is(target error) bool { return target == ErrBadReference }

// String returns the full normalized form: index.docker.io/library/node:latest[@sha256:…],
// oci:/abs/dir[:tag], docker-archive:/abs/file.
func (r Reference) String() string {
	switch r.Transport {
	case TransportOCI:
		if r.Tag != "" {
			return "oci:" + r.Path + ":" + r.Tag
		}
		return "oci:" + r.Path
	case TransportDockerArchive:
		return "docker-archive:" + r.Path
	}
	s := r.Registry + "/" + r.Repository
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest.String()
	}
	return s
}

// Name is the reference without tag or digest (index.docker.io/library/node).
func (r Reference) Name() string {
	if r.Transport != TransportRegistry {
		return r.String()
	}
	return r.Registry + "/" + r.Repository
}

// IsDockerHub reports whether the reference points at Docker Hub.
func (r Reference) IsDockerHub() bool {
	return r.Transport == TransportRegistry && r.Registry == DockerHub
}

// identifier is what goes into /v2/<repo>/manifests/<identifier>: the digest wins over the tag.
func (r Reference) identifier() string {
	if r.Digest != "" {
		return r.Digest.String()
	}
	return r.Tag
}
