package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"
)

func TestRetryAfter(t *testing.T) {
	p := RetryPolicy{MaxRetryAfter: 10 * time.Second}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		h        string
		min, max time.Duration
		ok       bool
	}{
		{"3", 3 * time.Second, 3*time.Second + 600*time.Millisecond + 1, true},
		{"0", 0, 0, true},
		{"3600", 10 * time.Second, 12*time.Second + 1, true}, // capped, then jittered
		{now.Add(5 * time.Second).Format(http.TimeFormat), 5 * time.Second, 6*time.Second + 1, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, 0, true},
		{"", 0, 0, false},
		{"soon", 0, 0, false},
		{"-1", 0, 0, false},
	}
	for _, tt := range tests {
		for range 20 {
			d, ok := p.retryAfter(tt.h, now)
			if ok != tt.ok || d < tt.min || d > tt.max {
				t.Fatalf("retryAfter(%q) = %v, %v; want %v in [%v, %v]", tt.h, d, ok, tt.ok, tt.min, tt.max)
			}
		}
	}
}

func TestBackoff(t *testing.T) {
	p := RetryPolicy{MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	for n, base := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 9: time.Second} {
		for range 50 {
			if d := p.backoff(n); d < base/2 || d >= base*3/2 {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v)", n, d, base/2, base*3/2)
			}
		}
	}
}

func TestRetryableError(t *testing.T) {
	ctx := context.Background()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	tests := []struct {
		ctx  context.Context
		err  error
		want bool
	}{
		{ctx, io.ErrUnexpectedEOF, true},
		{ctx, fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{ctx, fmt.Errorf("x: %w", ErrStalled), true},
		{ctx, fmt.Errorf("dial: %w", syscall.ECONNREFUSED), false},
		{ctx, errors.New("x509: certificate signed by unknown authority"), false},
		{cancelled, io.ErrUnexpectedEOF, false},
	}
	for _, tt := range tests {
		if got := retryableError(tt.ctx, tt.err); got != tt.want {
			t.Errorf("retryableError(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestCheckRedirect(t *testing.T) {
	mk := func(u string) *http.Request {
		r, _ := http.NewRequest(http.MethodGet, u, nil)
		r.Header.Set("Authorization", "Bearer x")
		return r
	}
	tests := []struct {
		from, to string
		keep     bool
		err      bool
	}{
		{"https://reg.example/v2/", "https://reg.example/blob", true, false},
		{"https://reg.example/v2/", "https://cdn.example/blob", false, false},
		{"https://reg.example/v2/", "https://sub.reg.example/blob", false, false},
		{"http://127.0.0.1:5000/v2/", "http://127.0.0.1:5001/blob", false, false},
		{"https://reg.example/v2/", "http://cdn.example/blob", false, true},
	}
	for _, tt := range tests {
		to := mk(tt.to)
		err := checkRedirect(to, []*http.Request{mk(tt.from)})
		if (err != nil) != tt.err {
			t.Errorf("%s → %s: err = %v", tt.from, tt.to, err)
			continue
		}
		if got := to.Header.Get("Authorization") != ""; !tt.err && got != tt.keep {
			t.Errorf("%s → %s: Authorization kept = %v, want %v", tt.from, tt.to, got, tt.keep)
		}
	}
	via := make([]*http.Request, 10)
	for i := range via {
		via[i] = mk("https://reg.example/v2/")
	}
	if err := checkRedirect(mk("https://reg.example/x"), via); err == nil {
		t.Error("11th redirect was followed")
	}
}

func FuzzParseReference(f *testing.F) {
	for _, s := range []string{"node", "a/b:c", "localhost:5000/x@sha256:" + fmt.Sprintf("%064d", 1), "oci:/x:y", "docker-archive:f", "Node", "a..b", "[::1]:5000/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseReference(s)
		if err != nil {
			if !errors.Is(err, ErrBadReference) {
				t.Fatalf("%q: error %v does not wrap ErrBadReference", s, err)
			}
			return
		}
		if r.Transport != TransportRegistry {
			return
		}
		// A parsed reference prints as something that parses to itself.
		r2, err := ParseReference(r.String())
		if err != nil || r2 != r {
			t.Fatalf("%q → %q → %+v, %v", s, r.String(), r2, err)
		}
	})
}

func FuzzClassify(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`), "")
	f.Add([]byte(`{"schemaVersion":2,"config":{},"layers":[]}`), "application/vnd.docker.distribution.manifest.v2+json")
	f.Add([]byte(`{"schemaVersion":1}`), "application/json")
	f.Fuzz(func(t *testing.T, body []byte, ct string) {
		mt, err := classify(body, ct)
		if err != nil {
			if !errors.Is(err, ErrUnsupportedManifest) {
				t.Fatalf("error %v does not wrap ErrUnsupportedManifest", err)
			}
			return
		}
		if isIndexType(mt) {
			decodeIndex(body)
		} else {
			decodeManifest(body)
		}
	})
}
