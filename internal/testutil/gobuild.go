package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

var buildMu sync.Mutex // one go build at a time per test binary: the machine is small

// BuildGo compiles the Go program src (a complete main package using only the standard
// library) into a static executable (CGO_ENABLED=0) and returns its path. Binaries are
// cached by source, name and Go version under os.TempDir()/imgrun-testbin, so each program
// is built once per machine, however many tests and test binaries ask for it; the file is
// renamed into place only when complete, so parallel test binaries can share the cache.
// The returned file must not be modified.
func BuildGo(t testing.TB, name, src string) string {
	t.Helper()
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s/%s\x00%s\x00", runtime.Version(), runtime.GOOS, runtime.GOARCH, name)
	h.Write([]byte(src))
	key := hex.EncodeToString(h.Sum(nil))[:24]
	dir := filepath.Join(os.TempDir(), "imgrun-testbin", key)
	out := filepath.Join(dir, name)

	buildMu.Lock()
	defer buildMu.Unlock()
	if fi, err := os.Stat(out); err == nil && fi.Mode().IsRegular() {
		return out
	}
	if err := buildGo(name, src, dir, out); err != nil {
		t.Fatalf("build test program %s: %v", name, err)
	}
	return out
}

func buildGo(name, src, dir, out string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp(dir, ".build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	files := map[string]string{
		"go.mod":  "module testprog\n\ngo 1.26\n",
		"main.go": src,
	}
	for f, data := range files {
		if err := os.WriteFile(filepath.Join(work, f), []byte(data), 0o644); err != nil {
			return err
		}
	}
	goBin, err := exec.LookPath("go") // go test puts GOROOT/bin first on PATH
	if err != nil {
		return fmt.Errorf("go tool: %w", err)
	}
	tmp := filepath.Join(work, name)
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", tmp, ".")
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=", "GOTOOLCHAIN=local")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, b)
	}
	return os.Rename(tmp, out)
}
