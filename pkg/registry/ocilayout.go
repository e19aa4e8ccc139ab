package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// annotationPlatform is the annotation imgrun's own cache puts on index.json entries.
const annotationPlatform = "io.imgrun.platform"

// ociLayout serves oci:DIR[:TAG] from an OCI image layout directory.
type ociLayout struct {
	ref Reference
}

func openOCILayout(ref Reference) (Source, error) {
	if ref.Path == "" {
		return nil, fmt.Errorf("open %s: no directory: %w", ref, ErrBadReference)
	}
	return &ociLayout{ref: ref}, nil
}

func (l *ociLayout) Reference() Reference { return l.ref }

func (l *ociLayout) Resolve(ctx context.Context, platform ocispec.Platform, known KnownFunc) (*Image, error) {
	img, err := resolve(ctx, &ociBackend{l: l, want: platform}, l.ref, platform, known)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", l.ref, err)
	}
	return img, nil
}

func (l *ociLayout) Fetch(ctx context.Context, desc ocispec.Descriptor, offset int64) (io.ReadCloser, int64, error) {
	f, err := l.openBlob(desc.Digest)
	if err != nil {
		return nil, 0, err
	}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("fetch %s from %s: %w", desc.Digest, l.ref, err)
		}
	}
	return f, offset, nil
}

// openBlob opens blobs/<alg>/<hex> inside the layout: the digest is validated before it
// becomes a path (B6), the lookup cannot leave the directory, and the blob itself must
// be a regular file, not a symlink (B7).
func (l *ociLayout) openBlob(d digest.Digest) (*os.File, error) {
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("blob %q in %s: %v: %w", d, l.ref, err, ErrUnsupportedManifest)
	}
	root, err := os.OpenRoot(l.ref.Path)
	if err != nil {
		return nil, fmt.Errorf("open layout %s: %w", l.ref.Path, notFound(err))
	}
	defer root.Close()
	name := path.Join("blobs", string(d.Algorithm()), d.Encoded())
	if fi, err := root.Lstat(name); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		return nil, fmt.Errorf("blob %s in %s is a symlink (refused): %w", d, l.ref.Path, ErrUnsupportedManifest)
	}
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("blob %s in %s is a symlink (refused): %w", d, l.ref.Path, ErrUnsupportedManifest)
		}
		return nil, fmt.Errorf("blob %s in %s: %w", d, l.ref.Path, notFound(err))
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("blob %s in %s is not a regular file: %w", d, l.ref.Path, ErrUnsupportedManifest)
	}
	return f, nil
}

// readSmall reads a whole blob of at most MaxManifestSize.
func (l *ociLayout) readSmall(d digest.Digest) ([]byte, error) {
	f, err := l.openBlob(d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s in %s: %w", d, l.ref.Path, err)
	}
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("blob %s in %s: more than %d bytes: %w", d, l.ref.Path, MaxManifestSize, ErrManifestTooLarge)
	}
	return b, nil
}

func (l *ociLayout) index() (ocispec.Index, error) {
	root, err := os.OpenRoot(l.ref.Path)
	if err != nil {
		return ocispec.Index{}, fmt.Errorf("open layout %s: %w", l.ref.Path, notFound(err))
	}
	defer root.Close()
	f, err := root.OpenFile("index.json", os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return ocispec.Index{}, fmt.Errorf("%s is not an OCI image layout: %w", l.ref.Path, notFound(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxManifestSize+1))
	if err != nil {
		return ocispec.Index{}, fmt.Errorf("read %s/index.json: %w", l.ref.Path, err)
	}
	if len(b) > MaxManifestSize {
		return ocispec.Index{}, fmt.Errorf("%s/index.json: %w", l.ref.Path, ErrManifestTooLarge)
	}
	idx, err := decodeIndex(b)
	if err != nil {
		return ocispec.Index{}, fmt.Errorf("%s/index.json: %w", l.ref.Path, err)
	}
	return idx, nil
}

func notFound(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%v: %w", err, ErrNotFound)
	}
	return err
}

// ociBackend picks the index.json entry named by the tag.
type ociBackend struct {
	l    *ociLayout
	want ocispec.Platform
}

// refMatches: TAG names an entry either by its full ref.name annotation or by the bare
// tag at the end of it (node:22 → "22").
func refMatches(refName, tag string) bool {
	if refName == tag {
		return true
	}
	// Docker short names match their normalized form (node:22 ≡ index.docker.io/library/node:22).
	if strings.ContainsAny(tag, "/:@") {
		a, err1 := ParseReference(refName)
		b, err2 := ParseReference(tag)
		if err1 == nil && err2 == nil && a.Transport == TransportRegistry && a == b {
			return true
		}
	}
	i := strings.LastIndexByte(refName, ':')
	return i >= 0 && !strings.Contains(refName[i+1:], "/") && refName[i+1:] == tag
}

func (b *ociBackend) top(ctx context.Context, known KnownFunc) (ocispec.Descriptor, []byte, string, error) {
	idx, err := b.l.index()
	if err != nil {
		return ocispec.Descriptor{}, nil, "", err
	}
	tag := b.l.ref.Tag
	var cands []ocispec.Descriptor
	names := map[string]bool{}
	for _, d := range idx.Manifests {
		n := d.Annotations[ocispec.AnnotationRefName]
		names[n] = true
		if tag == "" || refMatches(n, tag) {
			cands = append(cands, d)
		}
	}
	list := func() string {
		var s []string
		for n := range names {
			if n == "" {
				n = "(unnamed)"
			}
			s = append(s, n)
		}
		sort.Strings(s)
		return strings.Join(s, ", ")
	}
	if len(cands) == 0 {
		return ocispec.Descriptor{}, nil, "", fmt.Errorf("no image tagged %q in %s (it holds: %s): %w", tag, b.l.ref.Path, list(), ErrNotFound)
	}
	if len(cands) > 1 {
		cands = b.pick(cands)
	}
	if len(cands) != 1 {
		return ocispec.Descriptor{}, nil, "", fmt.Errorf("%s holds %d images (%s); name one with oci:DIR:TAG: %w", b.l.ref.Path, len(cands), list(), ErrBadReference)
	}
	d := cands[0]
	body, ok := knownBytes(known, d)
	if !ok {
		if d.Size > MaxManifestSize {
			return ocispec.Descriptor{}, nil, "", fmt.Errorf("manifest %s is %d bytes: %w", d.Digest, d.Size, ErrManifestTooLarge)
		}
		if body, err = b.l.readSmall(d.Digest); err != nil {
			return ocispec.Descriptor{}, nil, "", err
		}
		if err := verifyBytes("manifest", body, d.Digest, d.Size); err != nil {
			return ocispec.Descriptor{}, nil, "", err
		}
	}
	return ocispec.Descriptor{Digest: d.Digest, Size: int64(len(body))}, body, d.MediaType, nil
}

// pick narrows several entries with one name (as imgrun's cache holds one per platform)
// to the one for the wanted platform.
func (b *ociBackend) pick(cands []ocispec.Descriptor) []ocispec.Descriptor {
	first := cands[0].Annotations[ocispec.AnnotationRefName]
	for _, d := range cands {
		if d.Annotations[ocispec.AnnotationRefName] != first {
			return cands // different images: the caller must choose
		}
	}
	want := b.want
	if want.OS == "" && want.Architecture == "" {
		want = HostPlatform()
	}
	var out []ocispec.Descriptor
	for _, d := range cands {
		p := d.Platform
		if p == nil {
			if pp, err := ParsePlatform(d.Annotations[annotationPlatform]); err == nil {
				p = &pp
			}
		}
		if p != nil && platformMatches(want, *p) {
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		return cands
	}
	return out[:1]
}

func (b *ociBackend) manifest(ctx context.Context, desc ocispec.Descriptor) ([]byte, string, error) {
	body, err := b.l.readSmall(desc.Digest)
	return body, "", err
}

func (b *ociBackend) smallBlob(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
	return b.l.readSmall(desc.Digest)
}
