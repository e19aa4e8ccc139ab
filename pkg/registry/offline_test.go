package registry_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/imgrun/imgrun/internal/testreg"
	"github.com/imgrun/imgrun/pkg/registry"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func writeLayout(t *testing.T) (string, v1.Image, v1.Image) {
	t.Helper()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	single := testreg.OCIImage(t, "linux/amd64", testreg.Layer(t, testreg.File{Name: "a", Body: "single"}))
	if err := p.AppendImage(single, layout.WithAnnotations(map[string]string{ocispec.AnnotationRefName: "example.com/app:1"})); err != nil {
		t.Fatal(err)
	}
	arm := testreg.OCIImage(t, "linux/arm64", testreg.Layer(t, testreg.File{Name: "a", Body: "arm"}))
	idx := testreg.WithAttestation(t, testreg.Index(t, single, arm), single)
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{ocispec.AnnotationRefName: "multi"})); err != nil {
		t.Fatal(err)
	}
	return dir, single, arm
}

func TestOCILayout(t *testing.T) {
	dir, single, arm := writeLayout(t)
	c := newClient(t)
	tests := []struct {
		ref, platform string
		want          v1.Image
	}{
		{"oci:" + dir + ":example.com/app:1", "", single},
		{"oci:" + dir + ":1", "", single}, // the bare tag of the ref name
		{"oci:" + dir + ":multi", "linux/arm64/v8", arm},
		{"oci:" + dir + ":multi", "linux/amd64", single},
	}
	for _, tt := range tests {
		t.Run(tt.ref+" "+tt.platform, func(t *testing.T) {
			var p ocispec.Platform
			if tt.platform != "" {
				p = platform(t, tt.platform)
			}
			src := open(t, c, tt.ref)
			img, err := src.Resolve(t.Context(), p, nil)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := tt.want.Digest()
			if img.Descriptor.Digest.String() != want.String() {
				t.Errorf("digest %s, want %s", img.Descriptor.Digest, want)
			}
			l := img.Manifest.Layers[0]
			b, start, err := fetchAll(t, src, l, 3)
			if err != nil {
				t.Fatal(err)
			}
			full, _, _ := fetchAll(t, src, l, 0)
			if start != 3 || !bytes.Equal(b, full[3:]) || digest.FromBytes(full) != l.Digest {
				t.Errorf("fetch: start %d, %d bytes", start, len(b))
			}
		})
	}

	// No tag and two images: an error that lists them.
	_, err := open(t, c, "oci:"+dir).Resolve(t.Context(), ocispec.Platform{}, nil)
	if !errors.Is(err, registry.ErrBadReference) {
		t.Fatalf("no tag: err = %v, want ErrBadReference", err)
	}
	if _, err := open(t, c, "oci:"+dir+":nope").Resolve(t.Context(), ocispec.Platform{}, nil); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("unknown tag: err = %v, want ErrNotFound", err)
	}
	if _, err := open(t, c, "oci:"+t.TempDir()).Resolve(t.Context(), ocispec.Platform{}, nil); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("empty dir: err = %v, want ErrNotFound", err)
	}
}

// imgrun's own cache lists one entry per (reference, platform): the platform decides.
func TestOCILayoutCacheStyle(t *testing.T) {
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	amd, arm := smallImage(t, "linux/amd64"), smallImage(t, "linux/arm64")
	for plat, img := range map[string]v1.Image{"linux/amd64": amd, "linux/arm64": arm} {
		if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
			ocispec.AnnotationRefName: "index.docker.io/library/node:22",
			"io.imgrun.platform":      plat,
		})); err != nil {
			t.Fatal(err)
		}
	}
	c := newClient(t)
	for _, tc := range []struct {
		ref, plat string
		want      v1.Image
	}{
		{"oci:" + dir + ":node:22", "linux/arm64", arm},
		{"oci:" + dir + ":index.docker.io/library/node:22", "linux/amd64", amd},
		{"oci:" + dir + ":22", "linux/arm64/v8", arm},
		{"oci:" + dir, "linux/amd64", amd},
	} {
		img, err := open(t, c, tc.ref).Resolve(t.Context(), platform(t, tc.plat), nil)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.ref, tc.plat, err)
		}
		if want, _ := tc.want.Digest(); img.Descriptor.Digest.String() != want.String() {
			t.Errorf("%s %s: digest %s, want %s", tc.ref, tc.plat, img.Descriptor.Digest, want)
		}
	}
}

func TestOCILayoutRefusesSymlinkedBlob(t *testing.T) {
	dir, single, _ := writeLayout(t)
	cfg, err := single.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	blob := filepath.Join(dir, "blobs", "sha256", cfg.Hex)
	secret := filepath.Join(t.TempDir(), "secret")
	b, _ := os.ReadFile(blob)
	os.WriteFile(secret, b, 0o600)
	os.Remove(blob)
	if err := os.Symlink(secret, blob); err != nil {
		t.Fatal(err)
	}
	_, err = open(t, newClient(t), "oci:"+dir+":example.com/app:1").Resolve(t.Context(), ocispec.Platform{}, nil)
	if !errors.Is(err, registry.ErrUnsupportedManifest) {
		t.Fatalf("err = %v, want a refusal of the symlinked blob", err)
	}
}

func TestDockerArchiveFromGGCR(t *testing.T) {
	img := smallImage(t, "linux/amd64")
	file := filepath.Join(t.TempDir(), "img.tar")
	tag, _ := name.NewTag("example.com/app:1")
	if err := tarball.WriteToFile(file, tag, img); err != nil {
		t.Fatal(err)
	}
	checkArchive(t, file, img)
}

// TestDockerArchivePlainLayers builds what `docker save` writes: plain tar layers,
// <id>/layer.tar members, and a symlink for a repeated layer.
func TestDockerArchivePlainLayers(t *testing.T) {
	l1 := testreg.Tar(t, testreg.File{Name: "a", Body: "one"})
	l2 := testreg.Tar(t, testreg.File{Name: "b", Body: "two"})
	img := testreg.Image(t, "linux/amd64",
		testreg.RawLayer(l1, "application/vnd.docker.image.rootfs.diff.tar"),
		testreg.RawLayer(l2, "application/vnd.docker.image.rootfs.diff.tar"),
		testreg.RawLayer(l1, "application/vnd.docker.image.rootfs.diff.tar"))
	cfg, _ := img.RawConfigFile()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, body []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write(body)
	}
	add("aaa/layer.tar", l1)
	add("bbb/layer.tar", l2)
	tw.WriteHeader(&tar.Header{Name: "ccc/layer.tar", Typeflag: tar.TypeSymlink, Linkname: "../aaa/layer.tar"})
	add("config.json", cfg)
	mf, _ := json.Marshal([]map[string]any{{"Config": "config.json", "RepoTags": []string{"app:1"}, "Layers": []string{"aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar"}}})
	add("manifest.json", mf)
	tw.Close()
	file := filepath.Join(t.TempDir(), "save.tar")
	os.WriteFile(file, buf.Bytes(), 0o644)
	got := checkArchive(t, file, nil)
	if n := len(got.Manifest.Layers); n != 3 {
		t.Fatalf("%d layers", n)
	}
	if got.Manifest.Layers[0].Digest != digest.FromBytes(l1) || got.Manifest.Layers[2].Digest != digest.FromBytes(l1) ||
		got.Manifest.Layers[0].MediaType != registry.MediaTypeDockerLayerTar {
		t.Errorf("layers %+v", got.Manifest.Layers)
	}

	// manifest.json naming a member outside the archive is refused.
	bad := bytes.Replace(buf.Bytes(), []byte(`"bbb/layer.tar","ccc`), []byte(`"../../x.tar","ccc`), 1)
	os.WriteFile(file, bad, 0o644)
	if _, err := open(t, newClient(t), "docker-archive:"+file).Resolve(t.Context(), ocispec.Platform{}, nil); err == nil {
		t.Fatal("an escaping member name was accepted")
	}
}

func checkArchive(t *testing.T, file string, want v1.Image) *registry.Image {
	t.Helper()
	src := open(t, newClient(t), "docker-archive:"+file)
	img, err := src.Resolve(t.Context(), ocispec.Platform{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want != nil {
		cfg, _ := want.ConfigName()
		if img.Manifest.Config.Digest.String() != cfg.String() {
			t.Errorf("config %s, want %s", img.Manifest.Config.Digest, cfg)
		}
	}
	if img.Descriptor.MediaType != registry.MediaTypeDockerManifest || registry.FormatPlatform(img.Platform) != "linux/amd64" {
		t.Errorf("descriptor %+v platform %v", img.Descriptor, img.Platform)
	}
	for i, l := range img.Manifest.Layers {
		b, _, err := fetchAll(t, src, l, 0)
		if err != nil {
			t.Fatal(err)
		}
		if digest.FromBytes(b) != l.Digest || int64(len(b)) != l.Size {
			t.Errorf("layer %d: bytes do not match the synthesized descriptor", i)
		}
	}
	// The synthesized manifest is stable.
	again, err := open(t, newClient(t), "docker-archive:"+file).Resolve(t.Context(), ocispec.Platform{}, nil)
	if err != nil || again.Descriptor.Digest != img.Descriptor.Digest {
		t.Errorf("second resolve: %v, %v", again, err)
	}
	return img
}
