package registry_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/imgrun/imgrun/internal/testreg"
	"github.com/imgrun/imgrun/pkg/registry"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestResolveRandomImage(t *testing.T) {
	reg := testreg.New(t)
	img, err := random.Image(1024, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := reg.Push(t, "rand/img:v1", img)
	src := open(t, newClient(t), reg.Ref("rand/img:v1"))
	got, err := src.Resolve(t.Context(), ocispec.Platform{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Descriptor.Digest.String() != want.String() {
		t.Errorf("digest %s, want %s", got.Descriptor.Digest, want)
	}
	if got.Index != nil {
		t.Errorf("Index = %v, want nil for a single manifest", got.Index)
	}
	if len(got.Manifest.Layers) != 3 {
		t.Fatalf("%d layers, want 3", len(got.Manifest.Layers))
	}
	if digest.FromBytes(got.ConfigBytes) != got.Manifest.Config.Digest {
		t.Error("config bytes do not match the manifest")
	}
	for i, l := range got.Manifest.Layers {
		b, start, err := fetchAll(t, src, l, 0)
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		if start != 0 || digest.FromBytes(b) != l.Digest {
			t.Errorf("layer %d: start %d, digest %s, want %s", i, start, digest.FromBytes(b), l.Digest)
		}
	}
}

// multiPlatform pushes an OCI index with linux/amd64, linux/arm64/v8 and an attestation.
func multiPlatform(t *testing.T, reg *testreg.Registry, path string) (idx string, amd, arm string) {
	t.Helper()
	a := smallImage(t, "linux/amd64")
	b := testreg.OCIImage(t, "linux/arm64/v8", testreg.Layer(t, testreg.File{Name: "arm", Body: "arm64"}))
	ix := testreg.WithAttestation(t, testreg.Index(t, a, b), a)
	d := reg.PushIndex(t, path, ix)
	ad, err := a.Digest()
	bd, err2 := b.Digest()
	if err != nil || err2 != nil {
		t.Fatal(err, err2)
	}
	return d.String(), ad.String(), bd.String()
}

func TestResolvePlatforms(t *testing.T) {
	reg := testreg.New(t)
	idx, amd, arm := multiPlatform(t, reg, "multi/app:1")
	src := open(t, newClient(t), reg.Ref("multi/app:1"))
	tests := []struct {
		platform string
		want     string
		plat     string
	}{
		{"linux/amd64", amd, "linux/amd64"},
		{"linux/arm64", arm, "linux/arm64"},
		{"linux/arm64/v8", arm, "linux/arm64"},
		{"linux/x86_64", amd, "linux/amd64"},
	}
	for _, tt := range tests {
		t.Run(tt.platform, func(t *testing.T) {
			img, err := src.Resolve(t.Context(), platform(t, tt.platform), nil)
			if err != nil {
				t.Fatal(err)
			}
			if img.Descriptor.Digest.String() != tt.want {
				t.Errorf("digest %s, want %s", img.Descriptor.Digest, tt.want)
			}
			if img.Index == nil || img.Index.Digest.String() != idx || !isIndexBytes(img.IndexBytes) {
				t.Errorf("Index = %v, want %s", img.Index, idx)
			}
			if got := registry.FormatPlatform(img.Platform); got != tt.plat {
				t.Errorf("platform %s, want %s", got, tt.plat)
			}
		})
	}
}

func isIndexBytes(b []byte) bool {
	var v struct{ Manifests []json.RawMessage }
	return json.Unmarshal(b, &v) == nil && len(v.Manifests) > 0
}

func TestResolvePlatformMiss(t *testing.T) {
	reg := testreg.New(t)
	multiPlatform(t, reg, "multi/app:1")
	reg.Push(t, "single/app:1", smallImage(t, "linux/amd64"))
	c := newClient(t)
	for _, tc := range []struct{ ref, platform string }{
		{"multi/app:1", "linux/s390x"},
		{"multi/app:1", "linux/arm/v7"},
		{"multi/app:1", "unknown/unknown"}, // the attestation entry is never chosen
		{"single/app:1", "linux/arm64"},    // explicit platform vs a single-platform image
	} {
		t.Run(tc.ref+"/"+tc.platform, func(t *testing.T) {
			_, err := open(t, c, reg.Ref(tc.ref)).Resolve(t.Context(), platform(t, tc.platform), nil)
			if !errors.Is(err, registry.ErrNoMatchingPlatform) {
				t.Fatalf("err = %v, want ErrNoMatchingPlatform", err)
			}
			var pe *registry.PlatformError
			if !errors.As(err, &pe) {
				t.Fatalf("err %T is not a *PlatformError", err)
			}
			var avail []string
			for _, p := range pe.Available {
				avail = append(avail, registry.FormatPlatform(p))
			}
			if strings.HasPrefix(tc.ref, "multi") {
				if !slices.Equal(avail, []string{"linux/amd64", "linux/arm64"}) {
					t.Errorf("available = %v, want [linux/amd64 linux/arm64]", avail)
				}
			} else if !slices.Equal(avail, []string{"linux/amd64"}) {
				t.Errorf("available = %v", avail)
			}
		})
	}
}

func TestResolveDefaultPlatformAcceptsSingleImage(t *testing.T) {
	reg := testreg.New(t)
	want := reg.Push(t, "single/app:1", smallImage(t, "linux/s390x"))
	img, err := open(t, newClient(t), reg.Ref("single/app:1")).Resolve(t.Context(), ocispec.Platform{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if img.Descriptor.Digest.String() != want.String() || registry.FormatPlatform(img.Platform) != "linux/s390x" {
		t.Errorf("got %s %s", img.Descriptor.Digest, registry.FormatPlatform(img.Platform))
	}
}

func TestResolveManifestList(t *testing.T) {
	reg := testreg.New(t)
	a, b := smallImage(t, "linux/amd64"), smallImage(t, "linux/arm64")
	reg.PushIndex(t, "list/app:1", testreg.ManifestList(t, a, b))
	img, err := open(t, newClient(t), reg.Ref("list/app:1")).Resolve(t.Context(), platform(t, "linux/arm64"), nil)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := b.Digest()
	if img.Descriptor.Digest.String() != want.String() || img.Index.MediaType != registry.MediaTypeDockerManifestList {
		t.Errorf("got %s (%v)", img.Descriptor.Digest, img.Index)
	}
	if img.Descriptor.MediaType != registry.MediaTypeDockerManifest {
		t.Errorf("media type %s", img.Descriptor.MediaType)
	}
}

// knownFrom serves everything the first resolution fetched, like a warm cache.
func knownFrom(img *registry.Image) registry.KnownFunc {
	m := map[digest.Digest][]byte{
		img.Descriptor.Digest:      img.ManifestBytes,
		img.Manifest.Config.Digest: img.ConfigBytes,
	}
	if img.Index != nil {
		m[img.Index.Digest] = img.IndexBytes
	}
	return func(d digest.Digest) ([]byte, bool) { b, ok := m[d]; return b, ok }
}

func TestResolveKnownCostsOneHead(t *testing.T) {
	reg := testreg.New(t)
	_, amd, _ := multiPlatform(t, reg, "multi/app:1")
	c := newClient(t)
	first, err := open(t, c, reg.Ref("multi/app:1")).Resolve(t.Context(), platform(t, "linux/amd64"), nil)
	if err != nil {
		t.Fatal(err)
	}
	known := knownFrom(first)

	reg.Counter.Reset()
	again, err := open(t, c, reg.Ref("multi/app:1")).Resolve(t.Context(), platform(t, "linux/amd64"), known)
	if err != nil {
		t.Fatal(err)
	}
	if again.Descriptor.Digest.String() != amd {
		t.Errorf("digest %s", again.Descriptor.Digest)
	}
	if h, g := reg.Counter.Count(http.MethodHead, testreg.KindManifest), reg.Counter.Count(http.MethodGet, testreg.KindManifest); h != 1 || g != 0 {
		t.Errorf("manifest HEAD %d GET %d, want 1 and 0", h, g)
	}
	if n := reg.Counter.Count("", testreg.KindBlob); n != 0 {
		t.Errorf("%d blob requests, want 0", n)
	}

	// A pinned digest that is known costs no registry request at all.
	reg.Counter.Reset()
	pinned := reg.Ref("multi/app@" + first.Index.Digest.String())
	if _, err := open(t, c, pinned).Resolve(t.Context(), platform(t, "linux/amd64"), known); err != nil {
		t.Fatal(err)
	}
	if n := reg.Counter.Count("", testreg.KindManifest) + reg.Counter.Count("", testreg.KindBlob); n != 0 {
		t.Errorf("%d requests for a known pinned digest, want 0", n)
	}

	// known bytes that do not hash to the digest are ignored and fetched again.
	reg.Counter.Reset()
	liar := func(digest.Digest) ([]byte, bool) { return []byte("{}"), true }
	if _, err := open(t, c, reg.Ref("multi/app:1")).Resolve(t.Context(), platform(t, "linux/amd64"), liar); err != nil {
		t.Fatal(err)
	}
	if g := reg.Counter.Count(http.MethodGet, testreg.KindManifest); g != 2 {
		t.Errorf("manifest GETs %d, want 2 (index and platform manifest)", g)
	}
}

func TestResolvePinnedDigest(t *testing.T) {
	reg := testreg.New(t)
	img := smallImage(t, "linux/amd64")
	d := reg.Push(t, "app:1", img)
	other := reg.Push(t, "app:2", smallImage(t, "linux/arm64"))
	c := newClient(t)

	// tag@digest: the digest wins.
	got, err := open(t, c, reg.Ref("app:2@"+d.String())).Resolve(t.Context(), ocispec.Platform{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Descriptor.Digest.String() != d.String() {
		t.Errorf("digest %s, want %s", got.Descriptor.Digest, d)
	}

	// A registry that serves other bytes under the pinned digest is caught.
	otherBytes, _ := smallImage(t, "linux/arm64").RawManifest()
	_ = other
	bad := testreg.New(t, testreg.WithBackend(reg.Handler()), testreg.WithFaults(testreg.Fault{
		Kind: testreg.KindManifest, Action: testreg.Replace(otherBytes),
	}))
	_, err = open(t, c, bad.Ref("app@"+d.String())).Resolve(t.Context(), ocispec.Platform{}, nil)
	if !errors.Is(err, registry.ErrDigestMismatch) {
		t.Fatalf("err = %v, want ErrDigestMismatch", err)
	}

	// A tag whose HEAD digest differs from the bytes the GET returns is caught too
	// (the Docker-Content-Digest header is never trusted alone).
	liar := testreg.New(t, testreg.WithBackend(reg.Handler()), testreg.WithFaults(testreg.Fault{
		Method: http.MethodGet, Kind: testreg.KindManifest, Action: testreg.Replace(otherBytes),
	}))
	_, err = open(t, c, liar.Ref("app:1")).Resolve(t.Context(), ocispec.Platform{}, nil)
	if !errors.Is(err, registry.ErrDigestMismatch) {
		t.Fatalf("err = %v, want ErrDigestMismatch", err)
	}
}

func TestResolveCorruptConfig(t *testing.T) {
	reg := testreg.New(t, testreg.WithFaults(testreg.Fault{Kind: testreg.KindBlob, Method: http.MethodGet, Action: testreg.FlipByte(3)}))
	reg.Push(t, "app:1", smallImage(t, "linux/amd64"))
	_, err := open(t, newClient(t), reg.Ref("app:1")).Resolve(t.Context(), ocispec.Platform{}, nil)
	if !errors.Is(err, registry.ErrDigestMismatch) {
		t.Fatalf("err = %v, want ErrDigestMismatch", err)
	}
}

func TestResolveNotFound(t *testing.T) {
	reg := testreg.New(t)
	reg.Push(t, "app:1", smallImage(t, "linux/amd64"))
	c := newClient(t)
	for _, ref := range []string{"app:2", "nope:1", "app@sha256:" + strings.Repeat("ab", 32)} {
		_, err := open(t, c, reg.Ref(ref)).Resolve(t.Context(), ocispec.Platform{}, nil)
		if !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("%s: err = %v, want ErrNotFound", ref, err)
		} else if !strings.Contains(err.Error(), reg.Host) {
			t.Errorf("%s: error does not name the reference: %v", ref, err)
		}
	}
}

// rawManifest serves body as the manifest of every tag with Content-Type ct.
func rawManifest(t *testing.T, ct string, body []byte) *testreg.Registry {
	t.Helper()
	inner := testreg.New(t)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if testreg.KindOf(r.URL.Path) == testreg.KindManifest {
			w.Header().Set("Content-Type", ct)
			w.Header().Set("Docker-Content-Digest", digest.FromBytes(body).String())
			if r.Method == http.MethodGet {
				w.Write(body)
			}
			return
		}
		inner.Handler().ServeHTTP(w, r)
	})
	return testreg.New(t, testreg.WithBackend(h))
}

func TestResolveRefusesBadManifests(t *testing.T) {
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	cfgDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	manifest := func(extra string) []byte {
		c, _ := json.Marshal(cfgDesc)
		return []byte(`{"schemaVersion":2,"mediaType":"` + ocispec.MediaTypeImageManifest + `","config":` + string(c) + `,"layers":[]` + extra + `}`)
	}
	schema1 := []byte(`{"schemaVersion":1,"name":"library/app","tag":"1","architecture":"amd64","fsLayers":[{"blobSum":"sha256:` + strings.Repeat("a", 64) + `"}],"history":[]}`)
	tests := []struct {
		name string
		ct   string
		body []byte
		want error
	}{
		{"schema1", "application/vnd.docker.distribution.manifest.v1+prettyjws", schema1, registry.ErrUnsupportedManifest},
		{"schema1 as json", "application/json", schema1, registry.ErrUnsupportedManifest},
		{"manifests and layers", ocispec.MediaTypeImageManifest, manifest(`,"manifests":[]`), registry.ErrUnsupportedManifest},
		{"manifests and layers (non-empty)", ocispec.MediaTypeImageManifest, manifest(`,"manifests":[` + mustJSON(cfgDesc) + `]`), registry.ErrUnsupportedManifest},
		{"mediaType differs from Content-Type", ocispec.MediaTypeImageIndex, manifest(""), registry.ErrUnsupportedManifest},
		{"bad digest in manifest", ocispec.MediaTypeImageManifest, bytes.Replace(manifest(""), []byte(cfgDesc.Digest.Encoded()), []byte("../../../../etc/passwd"), 1), registry.ErrUnsupportedManifest},
		{"unknown media type", "application/vnd.example+json", []byte(`{"schemaVersion":2,"mediaType":"application/vnd.example+json"}`), registry.ErrUnsupportedManifest},
		{"not json", ocispec.MediaTypeImageManifest, []byte("<html>"), registry.ErrUnsupportedManifest},
		{"too large", ocispec.MediaTypeImageManifest, append(manifest(""), bytes.Repeat([]byte(" "), registry.MaxManifestSize)...), registry.ErrManifestTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := rawManifest(t, tt.ct, tt.body)
			_, err := open(t, newClient(t), reg.Ref("app:1")).Resolve(t.Context(), ocispec.Platform{}, nil)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			t.Log(err)
		})
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// An index entry that states no platform may be chosen; its config then decides.
func TestResolveIndexEntryWithoutPlatform(t *testing.T) {
	reg := testreg.New(t)
	img := smallImage(t, "linux/amd64")
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), mutate.IndexAddendum{Add: img})
	reg.PushIndex(t, "noplat:1", idx)
	c := newClient(t)
	got, err := open(t, c, reg.Ref("noplat:1")).Resolve(t.Context(), platform(t, "linux/amd64"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := img.Digest(); got.Descriptor.Digest.String() != want.String() || registry.FormatPlatform(got.Platform) != "linux/amd64" {
		t.Errorf("got %s %v", got.Descriptor.Digest, got.Platform)
	}
	if _, err := open(t, c, reg.Ref("noplat:1")).Resolve(t.Context(), platform(t, "linux/arm64"), nil); !errors.Is(err, registry.ErrNoMatchingPlatform) {
		t.Fatalf("arm64: err = %v, want ErrNoMatchingPlatform", err)
	}
}
