package distreg

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/imgrun/imgrun/internal/testutil"
)

// Binary is the registry executable of Debian's docker-registry package.
const Binary = "docker-registry"

// Registry is a running distribution registry.
type Registry struct {
	Host    string // "127.0.0.1:PORT"
	URL     string // "http://127.0.0.1:PORT"
	Dir     string // config, storage and log live here
	LogPath string

	user, pass string
	cmd        *exec.Cmd
	done       chan struct{} // closed when the process has exited
	stopOnce   sync.Once
}

// Option configures Start.
type Option func(*options)

type options struct {
	user, pass           string
	proxyURL             string
	proxyUser, proxyPass string
}

// readyTimeout bounds how long Start waits for the registry to answer.
const readyTimeout = 20 * time.Second

// WithBasicAuth protects the registry with htpasswd basic auth for one user.
func WithBasicAuth(user, pass string) Option {
	return func(o *options) { o.user, o.pass = user, pass }
}

// WithProxy makes the registry a pull-through cache of remoteURL (for example another
// Registry's URL), as a Docker Hub mirror is. A proxy refuses pushes. The remote must be
// up when Start is called: the registry asks it for its auth challenge at start.
func WithProxy(remoteURL string) Option {
	return func(o *options) { o.proxyURL = remoteURL }
}

// WithProxyAuth sets the credentials the proxy uses towards its remote.
func WithProxyAuth(user, pass string) Option {
	return func(o *options) { o.proxyUser, o.proxyPass = user, pass }
}

// Start runs docker-registry and waits until it answers GET /v2/. It skips the test when
// the binary is missing (fails on CI).
func Start(t testing.TB, opts ...Option) *Registry {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	bin := testutil.MustBin(t, Binary)
	dir := t.TempDir()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // the free port may be taken before we bind it
		r, err := start(t, bin, filepath.Join(dir, fmt.Sprint(attempt)), o)
		if err == nil {
			return r
		}
		lastErr = err
	}
	t.Fatalf("start %s: %v", Binary, lastErr)
	return nil
}

func start(t testing.TB, bin, dir string, o options) (*Registry, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	host := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	r := &Registry{
		Host:    host,
		URL:     "http://" + host,
		Dir:     dir,
		LogPath: filepath.Join(dir, "registry.log"),
		user:    o.user,
		pass:    o.pass,
		done:    make(chan struct{}),
	}
	cfg, err := r.config(o)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(r.LogPath)
	if err != nil {
		return nil, err
	}
	r.cmd = exec.Command(bin, "serve", cfgPath)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if err := r.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() {
		r.cmd.Wait()
		logf.Close()
		close(r.done)
	}()
	t.Cleanup(func() {
		r.Stop()
		if t.Failed() {
			t.Logf("%s log (%s):\n%s", Binary, r.LogPath, r.logTail(8<<10))
		}
	})
	if err := r.waitReady(readyTimeout); err != nil {
		r.Stop()
		return nil, fmt.Errorf("%w\n%s", err, r.logTail(4<<10))
	}
	return r, nil
}

func (r *Registry) config(o options) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, `version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: %s
  secret: imgrun-test-secret
health:
  storagedriver:
    enabled: false
`, filepath.Join(r.Dir, "storage"), r.Host)
	if o.user != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(o.pass), bcrypt.MinCost)
		if err != nil {
			return "", err
		}
		htpasswd := filepath.Join(r.Dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(o.user+":"+string(hash)+"\n"), 0o600); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "auth:\n  htpasswd:\n    realm: imgrun-test\n    path: %s\n", htpasswd)
	}
	if o.proxyURL != "" {
		fmt.Fprintf(&b, "proxy:\n  remoteurl: %s\n", o.proxyURL)
		if o.proxyUser != "" {
			fmt.Fprintf(&b, "  username: %s\n  password: %s\n", o.proxyUser, o.proxyPass)
		}
	}
	return b.String(), nil
}

func (r *Registry) waitReady(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+"/v2/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
		}
		select {
		case <-r.done:
			return errors.New("registry exited before it was ready")
		case <-ctx.Done():
			return fmt.Errorf("registry not ready after %s (last: %v)", timeout, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop kills the registry and waits for it to exit; the test's cleanup calls it too.
// Tests call it to make a registry (a mirror, say) go down.
func (r *Registry) Stop() {
	r.stopOnce.Do(func() {
		r.cmd.Process.Kill()
		<-r.done
	})
}

// Log returns the registry's log so far (access log included).
func (r *Registry) Log() string {
	b, _ := os.ReadFile(r.LogPath)
	return string(b)
}

func (r *Registry) logTail(n int) string {
	s := r.Log()
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}
