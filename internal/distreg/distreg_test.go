package distreg_test

import (
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/imgrun/imgrun/internal/distreg"
	"github.com/imgrun/imgrun/internal/testimage"
)

func get(t *testing.T, ref string, opts ...remote.Option) (*remote.Descriptor, error) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return remote.Get(r, append(opts, remote.WithContext(t.Context()))...)
}

func TestPushPull(t *testing.T) {
	r := distreg.Start(t)
	img := testimage.Tricky(t)
	want := r.Push(t, "test/tricky:v1", img)
	d, err := get(t, r.Ref("test/tricky:v1"))
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if d.Digest != want {
		t.Errorf("digest = %s, want %s", d.Digest, want)
	}
	if n := r.CountRequests("GET", "/v2/test/tricky/manifests/v1"); n != 1 {
		t.Errorf("access log shows %d manifest GETs, want 1:\n%s", n, r.Requests())
	}
}

func TestBasicAuth(t *testing.T) {
	r := distreg.Start(t, distreg.WithBasicAuth("alice", "s3cret"))
	want := r.Push(t, "private/img:1", testimage.Tricky(t))
	tests := []struct {
		name   string
		auth   authn.Authenticator
		status int
	}{
		{"right", &authn.Basic{Username: "alice", Password: "s3cret"}, 0},
		{"wrong password", &authn.Basic{Username: "alice", Password: "nope"}, http.StatusUnauthorized},
		{"anonymous", authn.Anonymous, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := get(t, r.Ref("private/img:1"), remote.WithAuth(tt.auth))
			if tt.status == 0 {
				if err != nil || d.Digest != want {
					t.Fatalf("get = %v, %v; want %s", d, err, want)
				}
				return
			}
			var terr *transport.Error
			if !errors.As(err, &terr) || terr.StatusCode != tt.status {
				t.Fatalf("get error = %v, want HTTP %d", err, tt.status)
			}
		})
	}
}

func TestProxy(t *testing.T) {
	origin := distreg.Start(t)
	want := origin.Push(t, "library/node:latest", testimage.Tricky(t))
	mirror := distreg.Start(t, distreg.WithProxy(origin.URL))
	d, err := get(t, mirror.Ref("library/node:latest"))
	if err != nil {
		t.Fatalf("get through mirror: %v", err)
	}
	if d.Digest != want {
		t.Fatalf("digest = %s, want %s", d.Digest, want)
	}
	img, err := d.Image()
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls { // blobs come through the mirror too
		rc, err := l.Compressed()
		if err != nil {
			t.Fatalf("layer through mirror: %v", err)
		}
		rc.Close()
	}
	// Now cached: the mirror serves the manifest by digest with the origin down.
	origin.Stop()
	if _, err := get(t, mirror.Ref("library/node@"+want.String())); err != nil {
		t.Fatalf("cached manifest with origin down: %v", err)
	}
}
