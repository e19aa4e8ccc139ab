package registry

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Layer media types a docker-archive manifest may be synthesized with.
const (
	MediaTypeDockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerLayerTar  = "application/vnd.docker.image.rootfs.diff.tar"
)

// dockerArchive serves docker-archive:FILE, the tarball `docker save` writes. There is
// no manifest in it: one is synthesized (Docker schema2) whose layer digests are the
// sha256 of the layer members, so the rest of imgrun verifies them like any other blob.
type dockerArchive struct {
	ref Reference

	once         sync.Once
	err          error
	members      map[string]member        // tar member name → data position
	blobs        map[digest.Digest]member // config and layers by digest
	manifestJSON []byte
}

type member struct {
	offset, size int64
}

func openDockerArchive(ref Reference) (Source, error) {
	if ref.Path == "" {
		return nil, fmt.Errorf("open %s: no file: %w", ref, ErrBadReference)
	}
	return &dockerArchive{ref: ref}, nil
}

func (a *dockerArchive) Reference() Reference { return a.ref }

func (a *dockerArchive) Resolve(ctx context.Context, platform ocispec.Platform, known KnownFunc) (*Image, error) {
	if err := a.load(ctx); err != nil {
		return nil, err
	}
	img, err := resolve(ctx, (*archiveBackend)(a), a.ref, platform, known)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", a.ref, err)
	}
	return img, nil
}

func (a *dockerArchive) Fetch(ctx context.Context, desc ocispec.Descriptor, offset int64) (io.ReadCloser, int64, error) {
	if err := a.load(ctx); err != nil {
		return nil, 0, err
	}
	m, ok := a.blobs[desc.Digest]
	if !ok {
		return nil, 0, fmt.Errorf("blob %s is not in %s: %w", desc.Digest, a.ref.Path, ErrNotFound)
	}
	f, err := os.Open(a.ref.Path)
	if err != nil {
		return nil, 0, fmt.Errorf("fetch %s: %w", desc.Digest, notFound(err))
	}
	offset = min(max(offset, 0), m.size)
	return readCloser{io.NewSectionReader(f, m.offset+offset, m.size-offset), f}, offset, nil
}

// load indexes the tar members once, reads manifest.json and hashes the config and layers.
func (a *dockerArchive) load(ctx context.Context) error {
	a.once.Do(func() { a.err = a.doLoad(ctx) })
	return a.err
}

// archiveEntry is one image in manifest.json.
type archiveEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

func (a *dockerArchive) doLoad(ctx context.Context) error {
	f, err := os.Open(a.ref.Path)
	if err != nil {
		return fmt.Errorf("open %s: %w", a.ref, notFound(err))
	}
	defer f.Close()
	a.members = map[string]member{}
	links := map[string]string{}
	cr := &countingReader{r: f}
	tr := tar.NewReader(cr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s is not a docker-archive tarball: %w", a.ref.Path, err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		name := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
		switch hdr.Typeflag {
		case tar.TypeReg:
			// tar.Reader reads lazily: the data of this member starts where we are now.
			a.members[name] = member{offset: cr.n, size: hdr.Size}
		case tar.TypeSymlink:
			// docker save links repeated layers: <id>/layer.tar -> ../<other>/layer.tar
			links[name] = path.Join(path.Dir(name), hdr.Linkname)
		}
	}
	for name, target := range links {
		for range 8 { // bounded: a link cycle is not followed forever
			if next, ok := links[target]; ok {
				target = next
				continue
			}
			break
		}
		if m, ok := a.members[target]; ok {
			a.members[name] = m
		}
	}

	mf, err := a.readMember(f, "manifest.json", MaxManifestSize)
	if err != nil {
		return err
	}
	var entries []archiveEntry
	if err := json.Unmarshal(mf, &entries); err != nil {
		return fmt.Errorf("%s: manifest.json: %v: %w", a.ref.Path, err, ErrUnsupportedManifest)
	}
	if len(entries) != 1 {
		var tags []string
		for _, e := range entries {
			tags = append(tags, strings.Join(e.RepoTags, "|"))
		}
		return fmt.Errorf("%s holds %d images (%s); imgrun reads archives of exactly one image: %w", a.ref.Path, len(entries), strings.Join(tags, ", "), ErrBadReference)
	}
	e := entries[0]

	a.blobs = map[digest.Digest]member{}
	cfg, err := a.readMember(f, e.Config, MaxManifestSize)
	if err != nil {
		return err
	}
	cfgDesc := ocispec.Descriptor{MediaType: MediaTypeDockerConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	a.blobs[cfgDesc.Digest] = a.members[cleanMember(e.Config)]

	layers := make([]ocispec.Descriptor, 0, len(e.Layers))
	for _, name := range e.Layers {
		d, err := a.hashMember(ctx, f, name)
		if err != nil {
			return err
		}
		layers = append(layers, d)
	}
	// Field order is fixed by the struct, so the synthesized manifest (and its digest)
	// is the same every time for the same archive.
	a.manifestJSON, err = json.Marshal(struct {
		SchemaVersion int                  `json:"schemaVersion"`
		MediaType     string               `json:"mediaType"`
		Config        ocispec.Descriptor   `json:"config"`
		Layers        []ocispec.Descriptor `json:"layers"`
	}{2, MediaTypeDockerManifest, cfgDesc, layers})
	return err
}

func cleanMember(name string) string { return path.Clean(strings.TrimPrefix(name, "./")) }

func (a *dockerArchive) lookup(name string) (member, error) {
	if !fsLocal(name) {
		return member{}, fmt.Errorf("%s: manifest.json names %q, outside the archive: %w", a.ref.Path, name, ErrUnsupportedManifest)
	}
	m, ok := a.members[cleanMember(name)]
	if !ok {
		return member{}, fmt.Errorf("%s: member %q missing: %w", a.ref.Path, name, ErrNotFound)
	}
	return m, nil
}

func fsLocal(name string) bool {
	c := path.Clean(name)
	return name != "" && !path.IsAbs(name) && c != ".." && !strings.HasPrefix(c, "../")
}

func (a *dockerArchive) readMember(f *os.File, name string, limit int64) ([]byte, error) {
	m, err := a.lookup(name)
	if err != nil {
		return nil, err
	}
	if m.size > limit {
		return nil, fmt.Errorf("%s: %s is %d bytes (limit %d): %w", a.ref.Path, name, m.size, limit, ErrManifestTooLarge)
	}
	b := make([]byte, m.size)
	if _, err := f.ReadAt(b, m.offset); err != nil {
		return nil, fmt.Errorf("%s: read %s: %w", a.ref.Path, name, err)
	}
	return b, nil
}

// hashMember computes a layer member's descriptor; the media type follows its magic
// bytes (docker save writes plain tars; other tools write gzip).
func (a *dockerArchive) hashMember(ctx context.Context, f *os.File, name string) (ocispec.Descriptor, error) {
	m, err := a.lookup(name)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	sr := io.NewSectionReader(f, m.offset, m.size)
	magic := make([]byte, 4)
	n, _ := io.ReadFull(sr, magic)
	mt := MediaTypeDockerLayerTar
	switch {
	case n >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		mt = MediaTypeDockerLayerGzip
	case n == 4 && bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		mt = ocispec.MediaTypeImageLayerZstd
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, m.offset, m.size)); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%s: read %s: %w", a.ref.Path, name, err)
	}
	if err := ctx.Err(); err != nil {
		return ocispec.Descriptor{}, err
	}
	d := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))
	a.blobs[d] = m
	return ocispec.Descriptor{MediaType: mt, Digest: d, Size: m.size}, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// archiveBackend adapts a loaded dockerArchive to resolve.
type archiveBackend dockerArchive

func (b *archiveBackend) top(ctx context.Context, known KnownFunc) (ocispec.Descriptor, []byte, string, error) {
	return ocispec.Descriptor{Digest: digest.FromBytes(b.manifestJSON), Size: int64(len(b.manifestJSON))}, b.manifestJSON, MediaTypeDockerManifest, nil
}

func (b *archiveBackend) manifest(ctx context.Context, desc ocispec.Descriptor) ([]byte, string, error) {
	return nil, "", errors.New("docker-archive has no index")
}

func (b *archiveBackend) smallBlob(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
	m, ok := b.blobs[desc.Digest]
	if !ok {
		return nil, fmt.Errorf("config %s is not in %s: %w", desc.Digest, b.ref.Path, ErrNotFound)
	}
	if m.size > MaxManifestSize {
		return nil, fmt.Errorf("config %s: %w", desc.Digest, ErrManifestTooLarge)
	}
	f, err := os.Open(b.ref.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, m.size)
	if _, err := f.ReadAt(buf, m.offset); err != nil {
		return nil, fmt.Errorf("%s: read config: %w", b.ref.Path, err)
	}
	return buf, nil
}
