package layers

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgrun/imgrun/internal/testreg"
	"github.com/imgrun/imgrun/pkg/registry"
)

// fastRetry keeps fault tests quick: the client's real retry logic with tiny delays.
var fastRetry = registry.RetryPolicy{Attempts: 4, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, MaxRetryAfter: 20 * time.Millisecond}

// source opens ref (registry-relative, "repo:tag") on reg through a real registry.Client
// with anonymous credentials.
func source(t testing.TB, host, ref string, opts ...registry.Option) registry.Source {
	t.Helper()
	base := []registry.Option{registry.WithKeychain(authn.NewMultiKeychain()), registry.WithRetry(fastRetry)}
	c, err := registry.New(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	r, err := registry.ParseReference(host + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	src, err := c.Open(r)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

var amd64 = ocispec.Platform{OS: "linux", Architecture: "amd64"}

// testImage is a deterministic image for platform whose layers are of the given sizes
// (random, incompressible bodies) plus a small text layer; seed varies the bytes.
func testImage(t testing.TB, platform string, seed uint64, sizes ...int) v1.Image {
	t.Helper()
	var ls []v1.Layer
	ls = append(ls, testreg.Layer(t,
		testreg.File{Name: "etc/"},
		testreg.File{Name: "etc/os-release", Body: "ID=test\nPLATFORM=" + platform + "\n"},
	))
	for i, n := range sizes {
		ls = append(ls, testreg.Layer(t,
			testreg.File{Name: "data/"},
			testreg.File{Name: "data/blob" + string(rune('a'+i)), Body: string(randomBytes(seed+uint64(i), n))},
		))
	}
	return testreg.Image(t, platform, ls...)
}

// largestLayer returns the digest of img's biggest layer.
func largestLayer(t testing.TB, img v1.Image) (v1.Hash, int64) {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var best v1.Hash
	var size int64
	for _, l := range ls {
		n, _ := l.Size()
		if n > size {
			best, _ = l.Digest()
			size = n
		}
	}
	return best, size
}

// blobGets counts blob GETs the registry saw for digests containing hex ("" = all).
func blobGets(reg *testreg.Registry, hex string) int {
	n := 0
	for _, r := range reg.Counter.Requests() {
		if r.Kind == testreg.KindBlob && r.Method == "GET" && strings.Contains(r.Path, hex) {
			n++
		}
	}
	return n
}

func digestOf(h v1.Hash) digest.Digest { return digest.Digest(h.String()) }
