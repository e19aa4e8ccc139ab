package registry_test

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/imgrun/imgrun/internal/testreg"
	"github.com/imgrun/imgrun/pkg/registry"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestTokenFlow(t *testing.T) {
	reg := testreg.New(t, testreg.WithToken(testreg.TokenConfig{User: "alice", Password: "s3cret"}))
	want := reg.Push(t, "private/app:1", smallImage(t, "linux/amd64"))

	// Without credentials the token endpoint refuses.
	_, err := open(t, newClient(t), reg.Ref("private/app:1")).Resolve(t.Context(), ocispec.Platform{}, nil)
	if !errors.Is(err, registry.ErrUnauthorized) {
		t.Fatalf("anonymous: err = %v, want ErrUnauthorized", err)
	}
	// Wrong password.
	bad := newClient(t, registry.WithKeychain(staticKeychain{reg.Host, authn.Basic{Username: "alice", Password: "nope"}}))
	if _, err := open(t, bad, reg.Ref("private/app:1")).Resolve(t.Context(), ocispec.Platform{}, nil); !errors.Is(err, registry.ErrUnauthorized) {
		t.Fatalf("wrong password: err = %v, want ErrUnauthorized", err)
	}

	c := newClient(t, registry.WithKeychain(staticKeychain{reg.Host, authn.Basic{Username: "alice", Password: "s3cret"}}))
	src := open(t, c, reg.Ref("private/app:1"))
	img, err := src.Resolve(t.Context(), ocispec.Platform{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if img.Descriptor.Digest.String() != want.String() {
		t.Errorf("digest %s, want %s", img.Descriptor.Digest, want)
	}
	if _, _, err := fetchAll(t, src, img.Manifest.Layers[0], 0); err != nil {
		t.Fatal(err)
	}
	if reg.Counter.Count("", testreg.KindToken) == 0 {
		t.Error("the token endpoint was never asked")
	}
	for _, r := range reg.Counter.Requests() {
		if r.Kind == testreg.KindBlob && !strings.HasPrefix(r.Authorization, "Bearer ") {
			t.Errorf("blob request without bearer token: %+v", r)
		}
	}
}

func TestTokenEndpointGarbage(t *testing.T) {
	reg := testreg.New(t, testreg.WithToken(testreg.TokenConfig{Garbage: true}))
	reg.Push(t, "app:1", smallImage(t, "linux/amd64"))
	_, err := open(t, newClient(t), reg.Ref("app:1")).Resolve(t.Context(), ocispec.Platform{}, nil)
	if !errors.Is(err, registry.ErrUnauthorized) {
		t.Fatalf("err = %v, want ErrUnauthorized", err)
	}
}

type staticKeychain struct {
	host string
	auth authn.Basic
}

func (k staticKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if r.RegistryStr() == k.host {
		a := k.auth
		return &a, nil
	}
	return authn.Anonymous, nil
}

// Credentials must never follow a redirect to another host (another port counts),
// whether they are a bearer token or basic auth.
func TestRedirectDropsCredentials(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    testreg.TokenConfig
		scheme string
	}{
		{"bearer", testreg.TokenConfig{User: "alice", Password: "s3cret"}, "Bearer "},
		{"basic", testreg.TokenConfig{User: "alice", Password: "s3cret", Basic: true}, "Basic "},
	} {
		for _, kind := range []string{testreg.KindBlob, testreg.KindManifest} {
			t.Run(tc.name+"/"+kind, func(t *testing.T) {
				testRedirectDropsCredentials(t, tc.cfg, tc.scheme, kind)
			})
		}
	}
}

func testRedirectDropsCredentials(t *testing.T, cfg testreg.TokenConfig, scheme, kind string) {
	var rec *testreg.Recorder
	redirect := func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		testreg.Redirect(rec.URL)(w, r, next)
	}
	// The fault sits in front of the auth check and redirects only requests that carry
	// credentials, so the client has authenticated before it is sent elsewhere.
	var reg *testreg.Registry
	reg = testreg.New(t, testreg.WithToken(cfg),
		testreg.WithFaults(testreg.Fault{Kind: kind, Method: http.MethodGet, Action: func(w http.ResponseWriter, r *http.Request, next http.Handler) {
			if r.Header.Get("Authorization") == "" {
				next.ServeHTTP(w, r)
				return
			}
			redirect(w, r, next)
		}}))
	rec = testreg.NewRecorder(t, reg.Handler())
	reg.Push(t, "app:1", smallImage(t, "linux/amd64"))

	c := newClient(t, registry.WithKeychain(staticKeychain{reg.Host, authn.Basic{Username: "alice", Password: "s3cret"}}))
	src := open(t, c, reg.Ref("app:1"))
	img, err := src.Resolve(t.Context(), ocispec.Platform{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := fetchAll(t, src, img.Manifest.Layers[0], 0)
	if err != nil {
		t.Fatal(err)
	}
	if digest.FromBytes(b) != img.Manifest.Layers[0].Digest {
		t.Error("redirected blob has the wrong bytes")
	}
	if len(rec.Requests()) == 0 {
		t.Fatal("the redirect target was never asked: the test proves nothing")
	}
	if a := rec.Authorizations(); len(a) != 0 {
		t.Errorf("credentials reached the other host: %q", a)
	}
	sawCreds := false
	for _, r := range reg.Counter.Requests() {
		if r.Kind == kind && strings.HasPrefix(r.Authorization, scheme) {
			sawCreds = true
		}
	}
	if !sawCreds {
		t.Errorf("no %s credentials reached the registry: the test proves nothing", scheme)
	}
}

func TestRedirectLoop(t *testing.T) {
	reg := testreg.New(t, testreg.WithFaults(testreg.Fault{Kind: testreg.KindBlob, Action: testreg.RedirectLoop()}))
	reg.Push(t, "app:1", smallImage(t, "linux/amd64"))
	_, err := open(t, newClient(t), reg.Ref("app:1")).Resolve(t.Context(), ocispec.Platform{}, nil)
	if err == nil || !strings.Contains(err.Error(), "redirect") {
		t.Fatalf("err = %v, want a redirect error", err)
	}
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name  string
		fault testreg.Fault
	}{
		{"500 then OK", testreg.Fault{Kind: testreg.KindManifest, Times: 2, Action: testreg.Status(500)}},
		{"503 then OK", testreg.Fault{Kind: testreg.KindBlob, Times: 1, Action: testreg.Status(503, "Retry-After", "0")}},
		{"408 then OK", testreg.Fault{Kind: testreg.KindManifest, Method: http.MethodGet, Times: 1, Action: testreg.Status(408)}},
		{"429 Retry-After then OK", testreg.Fault{Kind: testreg.KindManifest, Times: 2, Action: testreg.RateLimit("1", 100, 0)}},
		{"429 HTTP date then OK", testreg.Fault{Kind: testreg.KindManifest, Times: 1, Action: testreg.RateLimit(time.Now().Add(time.Hour).UTC().Format(http.TimeFormat), 100, 0)}},
		{"connection dropped then OK", testreg.Fault{Kind: testreg.KindBlob, Times: 1, Action: testreg.Truncate(0)}},
		{"stall then OK", testreg.Fault{Kind: testreg.KindManifest, Times: 1, Action: testreg.Stall()}},
		{"ping stall then OK", testreg.Fault{Kind: testreg.KindPing, Times: 1, Action: testreg.Stall()}},
		{"ping 502 then OK", testreg.Fault{Kind: testreg.KindPing, Times: 2, Action: testreg.Status(502)}},
		{"body cut mid-way then OK", testreg.Fault{Kind: testreg.KindManifest, Method: http.MethodGet, Times: 1, Action: testreg.Truncate(20)}},
		{"slow but moving (trickle)", testreg.Fault{Kind: testreg.KindManifest, Method: http.MethodGet, Action: testreg.Trickle(64, 5*time.Millisecond)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := testreg.New(t, testreg.WithFaults(tt.fault))
			want := reg.Push(t, "app:1", smallImage(t, "linux/amd64"))
			c := newClient(t, registry.WithStallTimeout(200*time.Millisecond))
			img, err := open(t, c, reg.Ref("app:1")).Resolve(t.Context(), ocispec.Platform{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if img.Descriptor.Digest.String() != want.String() {
				t.Errorf("digest %s", img.Descriptor.Digest)
			}
		})
	}
}

func TestStallExhausted(t *testing.T) {
	reg := testreg.New(t, testreg.WithFaults(testreg.Fault{Kind: testreg.KindManifest, Action: testreg.Stall()}))
	reg.Push(t, "app:1", smallImage(t, "linux/amd64"))
	c := newClient(t, registry.WithStallTimeout(50*time.Millisecond))
	_, err := open(t, c, reg.Ref("app:1")).Resolve(t.Context(), ocispec.Platform{}, nil)
	if !errors.Is(err, registry.ErrStalled) {
		t.Fatalf("err = %v, want ErrStalled", err)
	}
}

func TestRateLimitExhausted(t *testing.T) {
	reg := testreg.New(t, testreg.WithFaults(testreg.Fault{Kind: testreg.KindManifest, Action: testreg.RateLimit("1", 100, 0)}))
	reg.Push(t, "app:1", smallImage(t, "linux/amd64"))
	_, err := open(t, newClient(t), reg.Ref("app:1")).Resolve(t.Context(), ocispec.Platform{}, nil)
	if !errors.Is(err, registry.ErrRateLimited) {
		t.Fatalf("err = %v, want ErrRateLimited", err)
	}
	var rl *registry.RateLimitError
	if !errors.As(err, &rl) || rl.Remaining != "0;w=21600" || rl.Limit != "100;w=21600" {
		t.Fatalf("RateLimitError = %+v", rl)
	}
	if !strings.Contains(err.Error(), "0;w=21600") {
		t.Errorf("message does not show RateLimit-Remaining: %v", err)
	}
	if n := reg.Counter.Count("", testreg.KindManifest); n != fastRetry.Attempts {
		t.Errorf("%d manifest requests, want %d (the retry budget)", n, fastRetry.Attempts)
	}
}

func TestUnauthorizedAndDown(t *testing.T) {
	reg := testreg.New(t, testreg.WithFaults(testreg.Fault{Kind: testreg.KindManifest, Action: testreg.Status(403)}))
	reg.Push(t, "app:1", smallImage(t, "linux/amd64"))
	_, err := open(t, newClient(t), reg.Ref("app:1")).Resolve(t.Context(), ocispec.Platform{}, nil)
	if !errors.Is(err, registry.ErrUnauthorized) {
		t.Fatalf("403: err = %v, want ErrUnauthorized", err)
	}

	down := testreg.New(t)
	down.Close()
	_, err = open(t, newClient(t), down.Ref("app:1")).Resolve(t.Context(), ocispec.Platform{}, nil)
	if err == nil || errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("down registry: err = %v", err)
	}
}

func TestFetchRangeAndStall(t *testing.T) {
	reg := testreg.New(t)
	reg.Push(t, "app:1", smallImage(t, "linux/amd64"))
	src := open(t, newClient(t), reg.Ref("app:1"))
	img, err := src.Resolve(t.Context(), ocispec.Platform{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	layer := img.Manifest.Layers[0]
	full, _, err := fetchAll(t, src, layer, 0)
	if err != nil {
		t.Fatal(err)
	}
	part, start, err := fetchAll(t, src, layer, 10)
	if err != nil {
		t.Fatal(err)
	}
	if start != 10 || string(part) != string(full[10:]) {
		t.Errorf("range fetch: start %d, %d bytes; want 10, %d", start, len(part), len(full)-10)
	}
	if got := reg.Counter.Ranges(); len(got) != 1 || got[0] != "bytes=10-"+itoa(layer.Size-1) {
		t.Errorf("Range headers %q", got)
	}

	// A server that ignores Range: the stream starts at 0 and says so.
	noRange := testreg.New(t, testreg.WithBackend(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Range")
		reg.Handler().ServeHTTP(w, r)
	})))
	src2 := open(t, newClient(t), noRange.Ref("app:1"))
	b, start, err := fetchAll(t, src2, layer, 10)
	if err != nil || start != 0 || string(b) != string(full) {
		t.Errorf("ignored range: start %d, %d bytes, err %v", start, len(b), err)
	}

	// A transfer that stops sending fails after the stall timeout instead of hanging.
	stall := testreg.New(t, testreg.WithBackend(reg.Handler()), testreg.WithFaults(testreg.Fault{Kind: testreg.KindBlob, Method: http.MethodGet, Action: testreg.StallAfter(5)}))
	src3 := open(t, newClient(t, registry.WithStallTimeout(100*time.Millisecond)), stall.Ref("app:1"))
	_, _, err = fetchAll(t, src3, layer, 0)
	if !errors.Is(err, registry.ErrStalled) {
		t.Fatalf("stalled body: err = %v, want ErrStalled", err)
	}

	// A trickle whose gaps exceed the stall timeout fails the same way (a per-read
	// timeout, not an overall one).
	trickle := testreg.New(t, testreg.WithBackend(reg.Handler()), testreg.WithFaults(testreg.Fault{Kind: testreg.KindBlob, Method: http.MethodGet, Action: testreg.Trickle(1, time.Second)}))
	_, _, err = fetchAll(t, open(t, newClient(t, registry.WithStallTimeout(100*time.Millisecond)), trickle.Ref("app:1")), layer, 0)
	if !errors.Is(err, registry.ErrStalled) {
		t.Fatalf("trickle: err = %v, want ErrStalled", err)
	}

	// A body longer than the descriptor is cut one byte past it; a Content-Length that
	// announces more is refused before reading.
	lying := testreg.New(t, testreg.WithBackend(reg.Handler()), testreg.WithFaults(testreg.Fault{Kind: testreg.KindBlob, Method: http.MethodGet, Action: testreg.LyingLength(int(layer.Size) + 100)}))
	_, _, err = fetchAll(t, open(t, newClient(t), lying.Ref("app:1")), layer, 0)
	if !errors.Is(err, registry.ErrDigestMismatch) {
		t.Fatalf("lying Content-Length: err = %v, want ErrDigestMismatch", err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
