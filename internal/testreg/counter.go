package testreg

import (
	"net/http"
	"strings"
	"sync"
)

// Request kinds, by the /v2/ path they address.
const (
	KindPing     = "ping"     // /v2/
	KindManifest = "manifest" // /v2/<repo>/manifests/<ref>
	KindBlob     = "blob"     // /v2/<repo>/blobs/<digest>
	KindUpload   = "upload"   // /v2/<repo>/blobs/uploads/...
	KindToken    = "token"    // the token realm
	KindOther    = "other"
)

// Request is what the Counter recorded about one request.
type Request struct {
	Method        string
	Kind          string
	Path          string
	Range         string // the Range header, if any
	Authorization string // the Authorization header, if any
}

// Counter records every request that reaches the front server.
type Counter struct {
	mu   sync.Mutex
	reqs []Request
}

// KindOf classifies a request path.
func KindOf(path string) string {
	switch {
	case path == "/v2/" || path == "/v2":
		return KindPing
	case path == tokenPath:
		return KindToken
	case !strings.HasPrefix(path, "/v2/"):
		return KindOther
	case strings.Contains(path, "/blobs/uploads"):
		return KindUpload
	case strings.Contains(path, "/manifests/"):
		return KindManifest
	case strings.Contains(path, "/blobs/"):
		return KindBlob
	}
	return KindOther
}

func (c *Counter) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.reqs = append(c.reqs, Request{
			Method:        r.Method,
			Kind:          KindOf(r.URL.Path),
			Path:          r.URL.Path,
			Range:         r.Header.Get("Range"),
			Authorization: r.Header.Get("Authorization"),
		})
		c.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

// Count returns how many requests had this method ("" = any) and kind ("" = any).
func (c *Counter) Count(method, kind string) int {
	n := 0
	for _, r := range c.Requests() {
		if (method == "" || r.Method == method) && (kind == "" || r.Kind == kind) {
			n++
		}
	}
	return n
}

// Requests returns a copy of everything recorded so far.
func (c *Counter) Requests() []Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Request(nil), c.reqs...)
}

// Ranges returns the Range headers seen on blob GETs, in order.
func (c *Counter) Ranges() []string {
	var out []string
	for _, r := range c.Requests() {
		if r.Kind == KindBlob && r.Method == http.MethodGet && r.Range != "" {
			out = append(out, r.Range)
		}
	}
	return out
}

// Reset forgets what was recorded.
func (c *Counter) Reset() {
	c.mu.Lock()
	c.reqs = nil
	c.mu.Unlock()
}
