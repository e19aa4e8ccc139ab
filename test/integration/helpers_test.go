//go:build integration

package integration

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/imgrun/imgrun/internal/distreg"
	"github.com/imgrun/imgrun/pkg/layers"
	"github.com/imgrun/imgrun/pkg/registry"
)

// pull resolves ref with a client made from opts and pulls it into a new store.
func pull(t *testing.T, st *layers.Store, ref string, opts ...registry.Option) (*layers.Image, error) {
	t.Helper()
	r, err := registry.ParseReference(ref)
	if err != nil {
		t.Fatalf("parse %s: %v", ref, err)
	}
	c, err := registry.New(opts...)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	src, err := c.Open(r)
	if err != nil {
		return nil, err
	}
	return st.Pull(t.Context(), src, layers.PullOptions{})
}

func openStore(t *testing.T) *layers.Store {
	t.Helper()
	st, err := layers.Open(t.TempDir())
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return st
}

// checkImage asserts that img is want (same manifest digest) and that every layer reads
// back, uncompressed, to its diffID.
func checkImage(t *testing.T, img *layers.Image, want v1.Image) {
	t.Helper()
	wantDigest, err := want.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if got := img.Record.Descriptor.Digest.String(); got != wantDigest.String() {
		t.Errorf("pulled manifest %s, want %s", got, wantDigest)
	}
	wantLayers, err := want.Layers()
	if err != nil {
		t.Fatal(err)
	}
	got := img.Layers()
	if len(got) != len(wantLayers) {
		t.Fatalf("%d layers, want %d", len(got), len(wantLayers))
	}
	for i, l := range got {
		diffID, err := wantLayers[i].DiffID()
		if err != nil {
			t.Fatal(err)
		}
		if l.DiffID.String() != diffID.String() {
			t.Errorf("layer %d diffID %s, want %s", i, l.DiffID, diffID)
		}
		rc, err := l.Uncompressed(t.Context())
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		_, err = io.Copy(io.Discard, rc)
		if cerr := rc.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Errorf("layer %d does not read back to its diffID: %v", i, err)
		}
	}
}

// loopbackOnly is an http.RoundTripper that sends requests for loopback hosts to
// http.DefaultTransport, routes the hosts in reroute to another loopback address over
// plain HTTP (standing in for Docker Hub), and refuses everything else, recording it:
// tests must never reach the internet, and some assert that they did not try to.
type loopbackOnly struct {
	reroute map[string]string // "index.docker.io" → "127.0.0.1:PORT"

	mu      sync.Mutex
	refused []string
}

var errNotLoopback = errors.New("test transport: refusing a non-loopback host")

func (lt *loopbackOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	host := req.URL.Hostname()
	if to, ok := lt.reroute[host]; ok {
		req = req.Clone(req.Context())
		req.URL.Scheme, req.URL.Host = "http", to // the Host header stays: the realm is named after it
		return http.DefaultTransport.RoundTrip(req)
	}
	if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
		return http.DefaultTransport.RoundTrip(req)
	}
	lt.mu.Lock()
	lt.refused = append(lt.refused, req.Method+" "+req.URL.String())
	lt.mu.Unlock()
	if req.Body != nil {
		req.Body.Close()
	}
	return nil, fmt.Errorf("%w: %s", errNotLoopback, req.URL.Host)
}

func (lt *loopbackOnly) Refused() []string {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	return append([]string(nil), lt.refused...)
}

// noRetry keeps failing pulls fast: the registry package's default retries a down host
// with backoff for seconds.
var noRetry = registry.WithRetry(registry.RetryPolicy{Attempts: 1})

// blobGETs counts the blob GETs in a distreg access log.
func blobGETs(reqs []distreg.Request) int {
	n := 0
	for _, r := range reqs {
		if r.Method == "GET" && strings.Contains(r.Path, "/blobs/sha256:") {
			n++
		}
	}
	return n
}
