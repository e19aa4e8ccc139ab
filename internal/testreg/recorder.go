package testreg

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// Recorder is a second loopback server (another host:port) that records the headers of
// every request it gets and then serves them with its handler (for instance a
// Registry's plain Handler, so a redirected blob GET still succeeds).
type Recorder struct {
	URL  string
	Host string

	mu   sync.Mutex
	reqs []*http.Request
}

// NewRecorder starts a Recorder in front of h (nil: answer 404 to everything).
func NewRecorder(t testing.TB, h http.Handler) *Recorder {
	t.Helper()
	if h == nil {
		h = http.NotFoundHandler()
	}
	rec := &Recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, r.Clone(r.Context()))
		rec.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	rec.URL = srv.URL
	rec.Host = strings.TrimPrefix(srv.URL, "http://")
	return rec
}

// Requests returns the requests received so far (headers only; bodies are not kept).
func (rec *Recorder) Requests() []*http.Request {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]*http.Request(nil), rec.reqs...)
}

// Authorizations returns every non-empty Authorization header received.
func (rec *Recorder) Authorizations() []string {
	var out []string
	for _, r := range rec.Requests() {
		if a := r.Header.Get("Authorization"); a != "" {
			out = append(out, a)
		}
	}
	return out
}
