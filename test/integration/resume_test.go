//go:build integration

package integration

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imgrun/imgrun/internal/distreg"
	"github.com/imgrun/imgrun/internal/testimage"
)

// TestResumeAfterKill kills `imgrun pull` of the Debian image mid-download (SIGKILL, so
// nothing is cleaned up), then pulls again from the real registry: the second pull must
// succeed and resume the partial layer with a Range request that distribution answers
// with 206.
func TestResumeAfterKill(t *testing.T) {
	reg := distreg.Start(t)
	reg.Push(t, "test/debian:bookworm", testimage.Debian(t))
	slow := throttled(t, reg.URL, 64<<10, 10*time.Millisecond) // ~6 MB/s: the kill lands mid-layer
	root := filepath.Join(t.TempDir(), "root")

	cmd := exec.CommandContext(t.Context(), imgrunBin(t), "--root", root, "--quiet", "--insecure", hostOf(slow), "pull", hostOf(slow)+"/test/debian:bookworm")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	partial := waitPartial(t, filepath.Join(root, "ingest"), 2<<20)
	cmd.Process.Kill()
	cmd.Wait()
	t.Logf("killed with %s partial", partial)

	out, errOut, err := imgrun(t, root, "pull", reg.Ref("test/debian:bookworm"))
	if err != nil {
		t.Fatalf("pull after kill: %v\n%s", err, errOut)
	}
	if !strings.Contains(out, "@sha256:") {
		t.Errorf("pull printed %q, want the pinned reference", out)
	}
	ranged := 0
	for _, r := range reg.Requests() {
		if r.Method == "GET" && strings.Contains(r.Path, "/blobs/") && r.Status == http.StatusPartialContent {
			ranged++
		}
	}
	if ranged == 0 {
		t.Errorf("the second pull resumed nothing with a Range request: %v", reg.Requests())
	}
}

// throttled serves target through a reverse proxy that sends at most chunk bytes per
// every, and returns its URL.
func throttled(t *testing.T, target string, chunk int, every time.Duration) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := httputil.NewSingleHostReverseProxy(u)
	p.ModifyResponse = func(resp *http.Response) error {
		resp.Body = &slowBody{rc: resp.Body, chunk: chunk, every: every}
		return nil
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv.URL
}

type slowBody struct {
	rc    io.ReadCloser
	chunk int
	every time.Duration
}

func (b *slowBody) Read(p []byte) (int, error) {
	time.Sleep(b.every)
	if len(p) > b.chunk {
		p = p[:b.chunk]
	}
	return b.rc.Read(p)
}

func (b *slowBody) Close() error { return b.rc.Close() }

func hostOf(rawURL string) string { return strings.TrimPrefix(rawURL, "http://") }

// waitPartial waits until a file in dir has at least n bytes and returns its size.
func waitPartial(t *testing.T, dir string, n int64) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && fi.Size() >= n {
				return fmt.Sprintf("%s (%d MiB)", fi.Name(), fi.Size()>>20)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no partial download of %d bytes in %s after 60s", n, dir)
	return ""
}
