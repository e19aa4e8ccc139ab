package registry_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/imgrun/imgrun/internal/testreg"
	"github.com/imgrun/imgrun/pkg/registry"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// hubTransport sends Docker Hub traffic to a local registry and refuses every other
// non-loopback host, so these tests never touch the internet.
type hubTransport struct{ hub string }

func (h hubTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	switch {
	case r.URL.Hostname() == registry.DockerHub:
		r = r.Clone(r.Context())
		r.URL.Scheme, r.URL.Host, r.Host = "http", h.hub, h.hub
	case !strings.HasPrefix(r.URL.Host, "127.0.0.1:"):
		return nil, fmt.Errorf("test transport: refusing to contact %s", r.URL.Host)
	}
	return http.DefaultTransport.RoundTrip(r)
}

func TestMirrors(t *testing.T) {
	img := smallImage(t, "linux/amd64")
	hub := testreg.New(t)
	hubDigest := hub.Push(t, "library/node:latest", img)

	good := testreg.New(t)
	good.Push(t, "library/node:latest", img)
	failing := testreg.New(t, testreg.WithFaults(testreg.Fault{Action: testreg.Status(502)}))
	failing.Push(t, "library/node:latest", img)
	empty := testreg.New(t) // 404 for everything
	down := testreg.New(t)
	down.Close()

	tests := []struct {
		name    string
		mirrors []*testreg.Registry
		served  *testreg.Registry // where the manifest and blobs must come from
	}{
		{"failing then good mirror", []*testreg.Registry{failing, good}, good},
		{"mirror 404 falls back to the origin", []*testreg.Registry{empty}, hub},
		{"mirror down falls back to the origin", []*testreg.Registry{down}, hub},
		{"good mirror first", []*testreg.Registry{good, failing}, good},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var urls []string
			for _, m := range tt.mirrors {
				urls = append(urls, m.URL)
			}
			all := []*testreg.Registry{hub, good, failing, empty}
			for _, r := range all {
				r.Counter.Reset()
			}
			c := newClient(t, registry.WithMirrors(urls...), registry.WithTransport(hubTransport{hub.Host}))
			src := open(t, c, "node")
			got, err := src.Resolve(t.Context(), ocispec.Platform{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got.Descriptor.Digest.String() != hubDigest.String() {
				t.Errorf("digest %s", got.Descriptor.Digest)
			}
			if _, _, err := fetchAll(t, src, got.Manifest.Layers[0], 0); err != nil {
				t.Fatal(err)
			}
			for _, r := range all {
				manifests := r.Counter.Count(http.MethodGet, testreg.KindManifest) + r.Counter.Count(http.MethodHead, testreg.KindManifest)
				blobs := r.Counter.Count(http.MethodGet, testreg.KindBlob)
				if r == tt.served {
					if manifests == 0 || blobs < 2 {
						t.Errorf("%s served %d manifest and %d blob requests, want it to serve the pull", r.Host, manifests, blobs)
					}
				} else if blobs != 0 {
					t.Errorf("%s got %d blob requests, want 0", r.Host, blobs)
				}
			}
			if tt.served != hub && hub.Counter.Count("", "") != 0 {
				t.Errorf("the origin was contacted although a mirror served the image: %+v", hub.Counter.Requests())
			}
		})
	}
}

func TestMirrorsOnlyForDockerHub(t *testing.T) {
	mirror := testreg.New(t)
	reg := testreg.New(t)
	reg.Push(t, "app:1", smallImage(t, "linux/amd64"))
	c := newClient(t, registry.WithMirrors(mirror.URL))
	if _, err := open(t, c, reg.Ref("app:1")).Resolve(t.Context(), ocispec.Platform{}, nil); err != nil {
		t.Fatal(err)
	}
	if n := mirror.Counter.Count("", ""); n != 0 {
		t.Errorf("mirror got %d requests for a non-Docker-Hub image", n)
	}
}

func TestMirrorThroughTokenServer(t *testing.T) {
	// A mirror that answers like Docker Hub (bearer realm) resolves library/node:latest.
	mirror := testreg.New(t, testreg.WithToken(testreg.TokenConfig{}))
	want := mirror.Push(t, "library/node:latest", smallImage(t, "linux/amd64"))
	hub := testreg.New(t, testreg.WithFaults(testreg.Fault{Action: testreg.Status(500)}))
	var logs bytes.Buffer
	c := newClient(t, registry.WithMirrors(mirror.URL), registry.WithTransport(hubTransport{hub.Host}),
		registry.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	img, err := open(t, c, "node:latest").Resolve(t.Context(), ocispec.Platform{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if img.Descriptor.Digest.String() != want.String() {
		t.Errorf("digest %s", img.Descriptor.Digest)
	}
	if !strings.Contains(logs.String(), "mirror "+mirror.URL) {
		t.Errorf("the log does not say which mirror served the image:\n%s", logs.String())
	}
	if mirror.Counter.Count("", testreg.KindToken) == 0 {
		t.Error("no token was requested")
	}
	var paths []string
	for _, r := range mirror.Counter.Requests() {
		if r.Kind == testreg.KindManifest {
			paths = append(paths, r.Path)
		}
	}
	if len(paths) == 0 || !strings.HasPrefix(paths[0], "/v2/library/node/manifests/latest") {
		t.Errorf("mirror manifest requests %q", paths)
	}
}

func TestBadMirror(t *testing.T) {
	for _, m := range []string{"ftp://x", "http://host/path", "://"} {
		if _, err := registry.New(registry.WithMirrors(m)); !errors.Is(err, registry.ErrBadReference) {
			t.Errorf("WithMirrors(%q): err = %v", m, err)
		}
	}
}
