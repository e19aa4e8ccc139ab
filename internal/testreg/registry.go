package testreg

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Registry is an in-process registry. Clients talk to Host/URL (through the configured
// wrappers); Push writes to the plain registry underneath.
type Registry struct {
	Host    string // "127.0.0.1:PORT" of the front server
	URL     string // "http://127.0.0.1:PORT"
	Counter *Counter

	front  *httptest.Server
	origin *httptest.Server
	plain  http.Handler
}

// Option adds behaviour in front of the registry.
type Option func(*config)

type config struct {
	token  *TokenConfig
	faults []Fault
	wrap   []func(http.Handler) http.Handler
	plain  http.Handler
}

// WithToken puts a Docker-Hub-like bearer token realm in front of the registry.
func WithToken(tc TokenConfig) Option { return func(c *config) { c.token = &tc } }

// WithFaults injects faults (see Fault). They apply in order; the first whose matcher
// accepts a request and still has uses left handles it.
func WithFaults(f ...Fault) Option { return func(c *config) { c.faults = append(c.faults, f...) } }

// WithHandler wraps the registry handler with any middleware (innermost first).
func WithHandler(wrap func(http.Handler) http.Handler) Option {
	return func(c *config) { c.wrap = append(c.wrap, wrap) }
}

// WithBackend replaces go-containerregistry's registry with h (e.g. a handler serving a
// schema1 manifest, or another Registry's Handler to act as its mirror).
func WithBackend(h http.Handler) Option { return func(c *config) { c.plain = h } }

// New starts a registry on 127.0.0.1 and stops it when the test ends.
func New(t testing.TB, opts ...Option) *Registry {
	t.Helper()
	var c config
	for _, o := range opts {
		o(&c)
	}
	plain := c.plain
	if plain == nil {
		plain = ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	}
	h := plain
	for _, w := range c.wrap {
		h = w(h)
	}
	if c.token != nil {
		h = tokenHandler(*c.token, h)
	}
	if len(c.faults) > 0 {
		h = faultHandler(c.faults, h)
	}
	counter := &Counter{}
	h = counter.wrap(h)

	r := &Registry{Counter: counter, plain: plain}
	r.front = httptest.NewServer(h)
	t.Cleanup(r.front.Close)
	r.origin = httptest.NewServer(plain)
	t.Cleanup(r.origin.Close)
	r.URL = r.front.URL
	r.Host = strings.TrimPrefix(r.front.URL, "http://")
	return r
}

// Handler is the plain registry, without wrappers: serve it elsewhere to build a mirror
// that shares this registry's content.
func (r *Registry) Handler() http.Handler { return r.plain }

// Close stops the front server now (to simulate a registry that is down).
func (r *Registry) Close() { r.front.Close() }

// Ref returns "HOST/path" for a repository path with optional tag or digest.
func (r *Registry) Ref(path string) string { return r.Host + "/" + path }

// Push writes img to path ("repo[:tag]") on the plain registry, bypassing faults, auth and
// the counter. It returns the manifest digest.
func (r *Registry) Push(t testing.TB, path string, img v1.Image) v1.Hash {
	t.Helper()
	ref := r.originRef(t, path)
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("testreg: push %s: %v", path, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("testreg: digest: %v", err)
	}
	return d
}

// PushIndex writes an image index (and every image it references) to path.
func (r *Registry) PushIndex(t testing.TB, path string, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	ref := r.originRef(t, path)
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatalf("testreg: push index %s: %v", path, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatalf("testreg: digest: %v", err)
	}
	return d
}

// PushRaw stores a manifest document as it is, with the given media type (for schema1,
// oversized or type-confused documents that ggcr's writers would not produce).
func (r *Registry) PushRaw(t testing.TB, path, mediaType string, body []byte) {
	t.Helper()
	repo, ident, ok := strings.Cut(path, ":")
	if !ok {
		ident = "latest"
	}
	if i := strings.Index(path, "@"); i >= 0 {
		repo, ident = path[:i], path[i+1:]
	}
	req, err := http.NewRequest(http.MethodPut, r.origin.URL+"/v2/"+repo+"/manifests/"+ident, strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", mediaType)
	resp, err := r.origin.Client().Do(req)
	if err != nil {
		t.Fatalf("testreg: put raw manifest: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("testreg: put raw manifest %s: status %d", path, resp.StatusCode)
	}
}

// PushBlob uploads raw bytes as a blob to repo.
func (r *Registry) PushBlob(t testing.TB, repo string, body []byte) v1.Hash {
	t.Helper()
	h, _, err := v1.SHA256(strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	// Monolithic upload: POST with digest and body.
	req, err := http.NewRequest(http.MethodPost, r.origin.URL+"/v2/"+repo+"/blobs/uploads/?digest="+h.String(), strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := r.origin.Client().Do(req)
	if err != nil {
		t.Fatalf("testreg: push blob: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("testreg: push blob to %s: status %d", repo, resp.StatusCode)
	}
	return h
}

func (r *Registry) originRef(t testing.TB, path string) name.Reference {
	t.Helper()
	host := strings.TrimPrefix(r.origin.URL, "http://")
	ref, err := name.ParseReference(host + "/" + path)
	if err != nil {
		t.Fatalf("testreg: bad path %q: %v", path, err)
	}
	return ref
}
