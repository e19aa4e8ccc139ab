//go:build integration

package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgrun/imgrun/internal/distreg"
	"github.com/imgrun/imgrun/internal/testimage"
	"github.com/imgrun/imgrun/internal/testreg"
	"github.com/imgrun/imgrun/internal/testutil"
)

var (
	cliOnce sync.Once
	cliPath string
	cliErr  error
	cliOut  []byte
)

// imgrunBin builds cmd/imgrun once per test binary.
func imgrunBin(t *testing.T) string {
	t.Helper()
	cliOnce.Do(func() {
		dir, err := os.MkdirTemp("", "imgrun-cli-")
		if err != nil {
			cliErr = err
			return
		}
		cliPath = filepath.Join(dir, "imgrun")
		cliOut, cliErr = exec.Command("go", "build", "-o", cliPath, "github.com/imgrun/imgrun/cmd/imgrun").CombinedOutput()
	})
	if cliErr != nil {
		t.Fatalf("build imgrun: %v\n%s", cliErr, cliOut)
	}
	return cliPath
}

// imgrun runs the CLI with a cache in root. Every non-loopback connection goes to a dead
// proxy, so nothing reaches the internet (Docker Hub included); loopback bypasses proxies.
func imgrun(t *testing.T, root string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), imgrunBin(t), append([]string{"--root", root, "--progress", "plain"}, args...)...)
	dead := "http://127.0.0.1:1"
	cmd.Env = append(os.Environ(), "HTTP_PROXY="+dead, "HTTPS_PROXY="+dead, "NO_PROXY=", "IMGRUN_MIRRORS=")
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// TestCLIThroughMirror is the promise on the box: `imgrun node:latest CMD` pulls
// library/node:latest through a registry mirror (a real distribution registry in proxy
// mode in front of a Docker Hub-like origin with token auth), unpacks it once and runs
// the command in it.
func TestCLIThroughMirror(t *testing.T) {
	origin := testreg.New(t, testreg.WithToken(testreg.TokenConfig{Service: "registry.docker.io"}))
	want := origin.Push(t, "library/node:latest", testimage.Busybox(t))
	mirror := distreg.Start(t, distreg.WithProxy(origin.URL))
	root := filepath.Join(t.TempDir(), "root")

	out, errOut, err := imgrun(t, root, "--mirror", mirror.URL, "pull", "node:latest")
	if err != nil {
		t.Fatalf("imgrun pull: %v\nstderr:\n%s", err, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if last := lines[len(lines)-1]; last != "index.docker.io/library/node@"+want.String() {
		t.Errorf("last stdout line = %q, want the pinned reference index.docker.io/library/node@%s", last, want)
	}

	t.Run("export", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "node.tar")
		if _, errOut, err := imgrun(t, root, "export", "node:latest", "-o", f); err != nil {
			t.Fatalf("imgrun export: %v\n%s", err, errOut)
		}
		r, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		tr := treeOfTar(t, r)
		if tr["bin/busybox"].Type != "file" || tr["bin/sh"].Link != "busybox" {
			t.Errorf("export lacks busybox: %+v %+v", tr["bin/busybox"], tr["bin/sh"])
		}
	})

	t.Run("run", func(t *testing.T) {
		testutil.RequiresRoot(t)
		mirror.Stop() // cached: running needs no network at all
		out, errOut, err := imgrun(t, root, "node:latest", "sh", "-c", "echo hello from $(hostname); id -u")
		if err != nil {
			t.Fatalf("imgrun node:latest: %v\nstderr:\n%s", err, errOut)
		}
		if !strings.Contains(out, "hello from") || !strings.HasSuffix(strings.TrimSpace(out), "0") {
			t.Errorf("output = %q", out)
		}
		_, _, err = imgrun(t, root, "node:latest", "sh", "-c", "exit 42")
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 42 {
			t.Errorf("exit 42 in the image gave %v", err)
		}
	})
}

// TestNodeThroughMirror: `imgrun node:latest node -v` prints the node version from a
// realistic node image (Debian bookworm with Debian's nodejs, three layers, ~300 MB)
// served through a registry mirror.
func TestNodeThroughMirror(t *testing.T) {
	testutil.RequiresRoot(t)
	origin := distreg.Start(t)
	want := origin.Push(t, "library/node:latest", testimage.Node(t))
	mirror := distreg.Start(t, distreg.WithProxy(origin.URL))
	root := filepath.Join(t.TempDir(), "root")

	start := time.Now()
	out, errOut, err := imgrun(t, root, "--mirror", mirror.URL, "node:latest", "node", "-v")
	t.Logf("cold imgrun node:latest node -v (pull %s through the mirror, unpack, run): %s", humanSize(t, origin), time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("imgrun node:latest node -v: %v\nstderr:\n%s", err, errOut)
	}
	if !regexp.MustCompile(`^v\d+\.\d+\.\d+$`).MatchString(strings.TrimSpace(out)) {
		t.Errorf("node -v printed %q", out)
	}
	start = time.Now()
	out, errOut, err = imgrun(t, root, "--mirror", mirror.URL, "node:latest", "node", "index.js")
	t.Logf("warm imgrun node:latest node index.js: %s", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("imgrun node:latest node index.js: %v\nstderr:\n%s", err, errOut)
	}
	if !strings.HasPrefix(out, "hello from node v") {
		t.Errorf("node index.js (in WorkingDir /app) printed %q", out)
	}
	blobs := blobGETs(mirror.Requests())
	if blobs < 4 {
		t.Errorf("the image did not come through the mirror: %v", mirror.Requests())
	}
	out, errOut, err = imgrun(t, root, "--mirror", mirror.URL, "pull", "node")
	if err != nil {
		t.Fatalf("imgrun pull node: %v\nstderr:\n%s", err, errOut)
	}
	if got := strings.TrimSpace(out); got != "index.docker.io/library/node@"+want.String() {
		t.Errorf("imgrun pull node printed %q, want the pinned index.docker.io/library/node@%s", got, want)
	}
	if n := blobGETs(mirror.Requests()) - blobs; n != 0 {
		t.Errorf("pulling the cached image again sent %d blob GETs, want 0", n)
	}
}

// humanSize is the size of a registry's storage, for logs.
func humanSize(t *testing.T, r *distreg.Registry) string {
	t.Helper()
	var n int64
	filepath.WalkDir(r.Dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return fmt.Sprintf("%.0f MB", float64(n)/1e6)
}
