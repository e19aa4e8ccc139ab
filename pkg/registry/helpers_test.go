package registry_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/imgrun/imgrun/internal/testreg"
	"github.com/imgrun/imgrun/pkg/registry"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// fastRetry keeps retry tests quick: real backoff logic, tiny delays.
var fastRetry = registry.RetryPolicy{Attempts: 4, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, MaxRetryAfter: 20 * time.Millisecond}

// newClient returns a client with anonymous credentials (never the developer's
// ~/.docker/config.json) and fast retries.
func newClient(t testing.TB, opts ...registry.Option) *registry.Client {
	t.Helper()
	base := []registry.Option{registry.WithKeychain(authn.NewMultiKeychain()), registry.WithRetry(fastRetry)}
	c, err := registry.New(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func open(t testing.TB, c *registry.Client, ref string) registry.Source {
	t.Helper()
	r, err := registry.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	src, err := c.Open(r)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func platform(t testing.TB, s string) ocispec.Platform {
	t.Helper()
	p, err := registry.ParsePlatform(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// smallImage is a deterministic one-layer image.
func smallImage(t testing.TB, plat string) v1.Image {
	t.Helper()
	return testreg.Image(t, plat, testreg.Layer(t,
		testreg.File{Name: "etc/"},
		testreg.File{Name: "etc/os-release", Body: "ID=test\n"},
		testreg.File{Name: "bin/hello", Body: "#!/bin/sh\necho hello " + plat + "\n", Mode: 0o755},
	))
}

func fetchAll(t testing.TB, src registry.Source, desc ocispec.Descriptor, offset int64) ([]byte, int64, error) {
	t.Helper()
	rc, start, err := src.Fetch(context.Background(), desc, offset)
	if err != nil {
		return nil, 0, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return b, start, err
}

func mustDigest(t testing.TB, h v1.Hash, err error) string {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}
