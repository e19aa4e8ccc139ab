//go:build chaos

package chaos

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imgrun/imgrun/internal/testreg"
)

// TestHostileRegistry pulls through a registry that misbehaves in every way the issue lists.
// Each pull must either fail with one clear line or retry its way to a correct result, within a
// hard deadline; afterwards `imgrun verify` passes and no blob holds wrong bytes.
func TestHostileRegistry(t *testing.T) {
	a, b := chaosImages(t)
	aDigest, _ := a.Digest()
	bManifest, _ := b.RawManifest()
	aLayers, _ := a.Layers()
	l2, _ := aLayers[2].Digest()
	l2Size, _ := aLayers[2].Size()
	l2hex := l2.Hex

	type outcome int
	const (
		mustFail outcome = iota
		mustSucceed
		either // a clear error or a correct retry
	)
	cases := []struct {
		name     string
		opts     func(t *testing.T) ([]testreg.Option, func(t *testing.T)) // registry options, an extra check
		ref      string                                                    // path on the registry (default chaos/a:1)
		want     outcome
		errRE    string // the one error line must match (case-insensitive)
		deadline time.Duration
		long     bool // only in the long mode (slow)
	}{
		{name: "wrong bytes under a correct digest", want: mustFail, errRE: "digest|sha256",
			opts: faults(testreg.Fault{Method: "GET", Kind: testreg.KindBlob, PathContains: l2hex, Action: testreg.FlipByte(1000)})},
		{name: "wrong bytes once", want: either, errRE: "digest|sha256",
			opts: faults(testreg.Fault{Method: "GET", Kind: testreg.KindBlob, PathContains: l2hex, Times: 1, Action: testreg.FlipByte(1000)})},
		{name: "manifest differs from the pinned digest", ref: "chaos/a@" + aDigest.String(), want: mustFail, errRE: "digest|sha256",
			opts: faults(testreg.Fault{Method: "GET", Kind: testreg.KindManifest, Action: testreg.Replace(bManifest)})},
		{name: "lying Docker-Content-Digest", want: either, errRE: "digest",
			opts: faults(testreg.Fault{Kind: testreg.KindManifest, Action: testreg.SetHeader("Docker-Content-Digest", "sha256:"+strings.Repeat("0", 64))})},
		{name: "oversized manifest (5 MiB)", ref: "chaos/big:1", want: mustFail, errRE: "large|size|limit|MiB",
			opts: func(t *testing.T) ([]testreg.Option, func(*testing.T)) { return nil, nil }},
		{name: "endless manifest", want: mustFail, errRE: "large|size|limit|MiB|manifest",
			opts: faults(testreg.Fault{Method: "GET", Kind: testreg.KindManifest, Action: endless})},
		{name: "Content-Length larger than the body", want: mustFail, errRE: "digest|size|EOF|length|short|unexpected",
			opts: faults(testreg.Fault{Method: "GET", Kind: testreg.KindBlob, PathContains: l2hex, Action: testreg.LyingLength(int(l2Size) + 4096)})},
		// A short but clean response is resumed with a Range request; whether the retry
		// succeeds depends on the sizes (it does when the lie is exactly half), so either.
		{name: "Content-Length smaller than the body", want: either, errRE: "digest|size|EOF|length|short|unexpected",
			opts: faults(testreg.Fault{Method: "GET", Kind: testreg.KindBlob, PathContains: l2hex, Action: testreg.LyingLength(int(l2Size) / 2)})},
		{name: "truncated once then whole", want: mustSucceed,
			opts: faults(testreg.Fault{Method: "GET", Kind: testreg.KindBlob, PathContains: l2hex, Times: 1, Action: testreg.Truncate(1 << 20)})},
		{name: "redirect loop", want: mustFail, errRE: "redirect",
			opts: faults(testreg.Fault{Method: "GET", Kind: testreg.KindBlob, Action: testreg.RedirectLoop()})},
		{name: "redirect to another host keeps no credentials", want: mustSucceed, opts: redirectElsewhere},
		{name: "token endpoint returns garbage", want: mustFail, errRE: "token|auth|unauthorized",
			opts: func(t *testing.T) ([]testreg.Option, func(*testing.T)) {
				return []testreg.Option{testreg.WithToken(testreg.TokenConfig{Garbage: true})}, nil
			}},
		{name: "slow trickle completes", want: mustSucceed,
			opts: faults(testreg.Fault{Method: "GET", Kind: testreg.KindBlob, Action: testreg.Trickle(64<<10, 5*time.Millisecond)})},
		{name: "stall mid-blob", want: either, errRE: "stall|timeout|no bytes", deadline: 6 * time.Minute, long: true,
			opts: faults(testreg.Fault{Method: "GET", Kind: testreg.KindBlob, PathContains: l2hex, Action: testreg.StallAfter(4096)})},
		{name: "429 storm that ends", want: mustSucceed,
			opts: faults(testreg.Fault{Kind: testreg.KindBlob, Times: 3, Action: testreg.RateLimit("1", 100, 0)})},
		{name: "429 forever", want: mustFail, errRE: "rate|429|too many", deadline: 3 * time.Minute,
			opts: faults(testreg.Fault{Action: testreg.RateLimit("1", 100, 0)})},
		{name: "500 twice then OK", want: mustSucceed,
			opts: faults(testreg.Fault{Kind: testreg.KindManifest, Times: 2, Action: testreg.Status(500)})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.long && !long() {
				t.Skip("long mode only: the stall timeout is 30 s and no CLI flag or env variable shortens it")
			}
			opts, extra := tc.opts(t)
			reg := chaosRegistry(t, opts...)
			if tc.ref == "chaos/big:1" {
				reg.PushRaw(t, "chaos/big:1", "application/vnd.oci.image.manifest.v1+json", bigManifest(t, 5<<20))
			}
			path := tc.ref
			if path == "" {
				path = "chaos/a:1"
			}
			c := cli{root: filepath.Join(t.TempDir(), "root"), insecure: []string{reg.Host}, deadline: tc.deadline}
			if c.deadline == 0 {
				c.deadline = 90 * time.Second
			}
			if tc.name == "redirect to another host keeps no credentials" {
				c.env = append(c.env, "DOCKER_CONFIG="+dockerConfig(t, reg.Host, "chaos", "secret"))
			}
			r := c.run(t, "pull", reg.Ref(path))
			line := r.lastLine()
			t.Logf("exit %d in %v: %s", r.code, r.dur.Round(time.Millisecond), line)
			switch {
			case r.timedOut:
				// finding already reported
			case r.code == 0 && tc.want == mustFail:
				finding(t, "pull succeeded; want a clear error")
			case r.code != 0 && tc.want == mustSucceed:
				finding(t, "pull failed; want a correct retry: %s", line)
			case r.code != 0:
				if r.code != 125 || !strings.HasPrefix(line, "imgrun: ") {
					finding(t, "want exit 125 and one line \"imgrun: …\", got exit %d: %q", r.code, r.stderr)
				}
				if tc.errRE != "" && !regexp.MustCompile("(?i)"+tc.errRE).MatchString(line) {
					finding(t, "error line does not say what went wrong (want /%s/): %s", tc.errRE, line)
				}
			case r.code == 0:
				pinned := strings.TrimSpace(r.stdout)
				if !strings.HasSuffix(pinned, aDigest.String()) {
					finding(t, "pull succeeded but pinned %q, want the real digest %s", pinned, aDigest)
				}
			}
			checkVerify(t, c)
			checkBlobs(t, c.root)
			checkIndex(t, c.root)
			if extra != nil {
				extra(t)
			}
		})
	}
}

// faults returns the options of a registry with the given faults.
func faults(f ...testreg.Fault) func(*testing.T) ([]testreg.Option, func(*testing.T)) {
	return func(*testing.T) ([]testreg.Option, func(*testing.T)) {
		return []testreg.Option{testreg.WithFaults(f...)}, nil
	}
}

// endless answers a manifest GET with 200 and a body that never ends.
func endless(w http.ResponseWriter, r *http.Request, _ http.Handler) {
	w.Header().Set("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
	w.WriteHeader(http.StatusOK)
	chunk := bytes.Repeat([]byte(" "), 64<<10)
	for r.Context().Err() == nil {
		if _, err := w.Write(chunk); err != nil {
			return
		}
	}
}

// redirectElsewhere needs basic credentials at the registry and redirects every blob GET to
// a Recorder on another port that serves the same content: the pull must succeed and no
// Authorization header may reach the other host.
func redirectElsewhere(t *testing.T) ([]testreg.Option, func(*testing.T)) {
	var rec *testreg.Recorder
	var reg http.Handler
	redirect := func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if rec == nil {
			rec = testreg.NewRecorder(t, reg)
		}
		testreg.Redirect(rec.URL)(w, r, next)
	}
	opts := []testreg.Option{
		testreg.WithToken(testreg.TokenConfig{User: "chaos", Password: "secret", Basic: true}),
		testreg.WithFaults(testreg.Fault{Method: "GET", Kind: testreg.KindBlob, Action: redirect}),
		testreg.WithHandler(func(h http.Handler) http.Handler { reg = h; return h }),
	}
	check := func(t *testing.T) {
		if rec == nil {
			finding(t, "no blob GET was redirected")
			return
		}
		if len(rec.Requests()) == 0 {
			finding(t, "the other host got no request")
		}
		if a := rec.Authorizations(); len(a) > 0 {
			finding(t, "credentials followed a redirect to another host: %q", a)
		}
	}
	return opts, check
}

// dockerConfig writes a docker config.json with basic credentials for host and returns its dir.
func dockerConfig(t *testing.T, host, user, pass string) string {
	dir := t.TempDir()
	cfg := map[string]any{"auths": map[string]any{host: map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))}}}
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// bigManifest is a syntactically valid OCI manifest of at least n bytes (a huge annotation).
func bigManifest(t *testing.T, n int) []byte {
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json",
			"digest": "sha256:" + strings.Repeat("a", 64), "size": 2},
		"layers":      []any{},
		"annotations": map[string]string{"padding": strings.Repeat("x", n)},
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
