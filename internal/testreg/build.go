package testreg

import (
	"archive/tar"
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// File is one tar entry of a hand-built layer. Zero values pick sensible defaults:
// Type regular file (directory when Name ends in "/"), Mode 0644 (0755 for directories).
type File struct {
	Name     string
	Type     byte // tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, …
	Body     string
	Mode     int64
	Linkname string
	UID, GID int
	Xattrs   map[string]string // stored as PAX "SCHILY.xattr." records
}

// Tar returns the uncompressed tar stream of files, byte-for-byte deterministic (zero
// mtimes, no user names).
func Tar(t testing.TB, files ...File) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{
			Name:     f.Name,
			Typeflag: f.Type,
			Mode:     f.Mode,
			Linkname: f.Linkname,
			Uid:      f.UID,
			Gid:      f.GID,
			ModTime:  time.Unix(0, 0),
			Format:   tar.FormatPAX,
		}
		if hdr.Typeflag == 0 {
			hdr.Typeflag = tar.TypeReg
			if strings.HasSuffix(f.Name, "/") {
				hdr.Typeflag = tar.TypeDir
			}
		}
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
			if hdr.Typeflag == tar.TypeDir {
				hdr.Mode = 0o755
			}
		}
		if hdr.Typeflag == tar.TypeReg {
			hdr.Size = int64(len(f.Body))
		}
		for k, v := range f.Xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("testreg: tar header %s: %v", f.Name, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := io.WriteString(tw, f.Body); err != nil {
				t.Fatalf("testreg: tar body %s: %v", f.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("testreg: tar close: %v", err)
	}
	return buf.Bytes()
}

// Layer builds a gzip-compressed Docker layer from files. The same files always give the
// same digest.
func Layer(t testing.TB, files ...File) v1.Layer {
	t.Helper()
	return LayerFromTar(t, Tar(t, files...))
}

// LayerFromTar wraps an uncompressed tar stream as a gzip-compressed layer.
func LayerFromTar(t testing.TB, tarBytes []byte) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarBytes)), nil
	}, tarball.WithCompressedCaching)
	if err != nil {
		t.Fatalf("testreg: layer: %v", err)
	}
	return l
}

// RawLayer is a layer whose compressed bytes are exactly b with the given media type
// (e.g. an uncompressed tar, or a zstd stream built by the caller).
func RawLayer(b []byte, mediaType types.MediaType) v1.Layer { return static.NewLayer(b, mediaType) }

// Image builds a Docker schema2 image for platform ("linux/amd64", "linux/arm64/v8") from
// layers, with a fixed config (Cmd /bin/sh, PATH set, zero timestamps), so the same
// layers always give the same manifest digest.
func Image(t testing.TB, platform string, layers ...v1.Layer) v1.Image {
	t.Helper()
	return build(t, platform, false, layers)
}

// OCIImage is Image with OCI media types (manifest, config and layers).
func OCIImage(t testing.TB, platform string, layers ...v1.Layer) v1.Image {
	t.Helper()
	return build(t, platform, true, layers)
}

func build(t testing.TB, platform string, oci bool, layers []v1.Layer) v1.Image {
	t.Helper()
	p, err := v1.ParsePlatform(platform)
	if err != nil {
		t.Fatalf("testreg: platform %q: %v", platform, err)
	}
	img := empty.Image
	if oci {
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	}
	cf := &v1.ConfigFile{
		Architecture: p.Architecture,
		OS:           p.OS,
		Variant:      p.Variant,
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Cmd: []string{"/bin/sh"},
		},
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatalf("testreg: config: %v", err)
	}
	for _, l := range layers {
		add := mutate.Addendum{Layer: l}
		if oci {
			mt, err := l.MediaType()
			if err != nil {
				t.Fatalf("testreg: layer media type: %v", err)
			}
			switch mt {
			case types.DockerLayer:
				add.MediaType = types.OCILayer
			case types.DockerUncompressedLayer:
				add.MediaType = types.OCIUncompressedLayer
			}
		}
		img, err = mutate.Append(img, add)
		if err != nil {
			t.Fatalf("testreg: append layer: %v", err)
		}
	}
	return img
}

// Index builds an OCI image index of imgs, each entry carrying its config's platform.
func Index(t testing.TB, imgs ...v1.Image) v1.ImageIndex {
	t.Helper()
	return index(t, mutate.IndexMediaType(empty.Index, types.OCIImageIndex), imgs)
}

// ManifestList builds a Docker manifest list of imgs.
func ManifestList(t testing.TB, imgs ...v1.Image) v1.ImageIndex {
	t.Helper()
	return index(t, mutate.IndexMediaType(empty.Index, types.DockerManifestList), imgs)
}

func index(t testing.TB, base v1.ImageIndex, imgs []v1.Image) v1.ImageIndex {
	t.Helper()
	var adds []mutate.IndexAddendum
	for _, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatalf("testreg: config: %v", err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant},
		}})
	}
	return mutate.AppendManifests(base, adds...)
}

// WithAttestation appends a BuildKit-style attestation entry for img to idx: platform
// unknown/unknown, annotated vnd.docker.reference.type=attestation-manifest.
func WithAttestation(t testing.TB, idx v1.ImageIndex, img v1.Image) v1.ImageIndex {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	att := OCIImage(t, "unknown/unknown", RawLayer([]byte(`{"predicateType":"https://slsa.dev/provenance/v0.2"}`), "application/vnd.in-toto+json"))
	return mutate.AppendManifests(idx, mutate.IndexAddendum{Add: att, Descriptor: v1.Descriptor{
		Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"},
		Annotations: map[string]string{
			"vnd.docker.reference.type":   "attestation-manifest",
			"vnd.docker.reference.digest": d.String(),
		},
	}})
}
