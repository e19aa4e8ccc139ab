package rootfs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imgrun/imgrun/internal/tartest"
	"github.com/imgrun/imgrun/pkg/rootfs"
)

var cacheKey = digest.FromString("manifest of the test image")

// cacheImage is a small two-layer image and its flattened tree.
func cacheImage() ([]rootfs.Layer, map[string]string) {
	layers := memLayers(
		tl{tDir("etc"), tFile("etc/os-release", "ID=test\n"), tFile("etc/gone", "x"), tFile("usr/bin/su", "su", tMode(0o4755))},
		tl{tWh("etc/gone"), tFile("etc/hostname", "box\n")},
	)
	want := ownersOff(map[string]string{
		"etc": "dir 0755 0:0", "etc/os-release": `file 0644 0:0 "ID=test\n"`, "etc/hostname": `file 0644 0:0 "box\n"`,
		"usr": "dir 0755 0:0", "usr/bin": "dir 0755 0:0", "usr/bin/su": `file 4755 0:0 "su"`,
	})
	return layers, want
}

// countLayer counts how often a layer is opened.
type countLayer struct {
	rootfs.Layer
	n *atomic.Int64
}

func (c countLayer) Uncompressed(ctx context.Context) (io.ReadCloser, error) {
	c.n.Add(1)
	return c.Layer.Uncompressed(ctx)
}

func openCache(t *testing.T) (*rootfs.Cache, string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	c, err := rootfs.OpenCache(root)
	if err != nil {
		t.Fatal(err)
	}
	return c, root
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestCacheEnsure(t *testing.T) {
	c, root := openCache(t)
	layers, want := cacheImage()
	p, err := c.Ensure(t.Context(), cacheKey, layers)
	if err != nil {
		t.Fatal(err)
	}
	if wantPath := filepath.Join(root, "rootfs", cacheKey.Encoded()); p != wantPath {
		t.Errorf("path %s, want %s", p, wantPath)
	}
	if d := diffMaps(diskTree(t, p), want); d != "" {
		t.Error(d)
	}
	if fi, err := os.Stat(filepath.Join(root, "rootfs")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("ROOT/rootfs: %v %v, want mode 0700", fi.Mode(), err)
	}
	if !c.Has(cacheKey) {
		t.Error("Has: false after Ensure")
	}
	keys, err := c.List(t.Context())
	if err != nil || len(keys) != 1 || keys[0] != cacheKey {
		t.Errorf("List: %v %v, want [%s]", keys, err, cacheKey)
	}
	// Cached: the layers are not read again.
	var opened atomic.Int64
	p2, err := c.Ensure(t.Context(), cacheKey, []rootfs.Layer{countLayer{openErrLayer{errDiffID}, &opened}})
	if err != nil || p2 != p || opened.Load() != 0 {
		t.Errorf("second Ensure: %s %v, opened %d layers; want %s, none opened", p2, err, opened.Load(), p)
	}
	if names := dirNames(t, filepath.Join(root, "tmp")); len(names) > 0 {
		t.Errorf("tmp/ holds %v after a build", names)
	}
	if _, err := c.Ensure(t.Context(), digest.Digest("sha256:../../etc"), layers); err == nil {
		t.Error("Ensure accepted an invalid digest")
	}
}

func TestCacheEnsureConcurrent(t *testing.T) {
	c, _ := openCache(t)
	layers, want := cacheImage()
	var opened atomic.Int64
	var counted []rootfs.Layer
	for _, l := range layers {
		counted = append(counted, countLayer{l, &opened})
	}
	var wg sync.WaitGroup
	paths := make([]string, 8)
	errs := make([]error, 8)
	for i := range paths {
		wg.Go(func() { paths[i], errs[i] = c.Ensure(t.Context(), cacheKey, counted) })
	}
	wg.Wait()
	for i := range paths {
		if errs[i] != nil || paths[i] != paths[0] {
			t.Errorf("Ensure %d: %s %v", i, paths[i], errs[i])
		}
	}
	if n := opened.Load(); n != int64(len(layers)) {
		t.Errorf("layers opened %d times, want %d (one build)", n, len(layers))
	}
	if d := diffMaps(diskTree(t, paths[0]), want); d != "" {
		t.Error(d)
	}
}

func TestCacheEnsureFailure(t *testing.T) {
	c, root := openCache(t)
	layers, _ := cacheImage()
	bad := append(layers[:1:1], badLayer{tartest.Tar(tFile("x", "x")), errDiffID})
	if _, err := c.Ensure(t.Context(), cacheKey, bad); !errors.Is(err, errDiffID) {
		t.Fatalf("Ensure: %v, want %v", err, errDiffID)
	}
	if c.Has(cacheKey) {
		t.Error("Has: true after a failed build")
	}
	for _, d := range []string{"rootfs", "tmp"} {
		if names := dirNames(t, filepath.Join(root, d)); len(names) > 0 {
			t.Errorf("%s/ holds %v after a failed build", d, names)
		}
	}
}

func TestCacheAcquireRemove(t *testing.T) {
	c, root := openCache(t)
	layers, want := cacheImage()
	if _, err := c.Acquire(t.Context(), cacheKey); !errors.Is(err, rootfs.ErrNotCached) {
		t.Errorf("Acquire before Ensure: %v, want ErrNotCached", err)
	}
	p, release, err := c.Use(t.Context(), cacheKey, layers)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(t.Context(), cacheKey); !errors.Is(err, rootfs.ErrInUse) {
		t.Errorf("Remove of a held tree: %v, want ErrInUse", err)
	}
	if d := diffMaps(diskTree(t, p), want); d != "" {
		t.Errorf("held tree changed:\n%s", d)
	}
	// Shared holders do not exclude each other.
	release2, err := c.Acquire(t.Context(), cacheKey)
	if err != nil {
		t.Fatalf("second Acquire: %v", err)
	}
	release()
	release2()
	if err := c.Remove(t.Context(), cacheKey); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if c.Has(cacheKey) {
		t.Error("Has: true after Remove")
	}
	if err := c.Remove(t.Context(), cacheKey); !errors.Is(err, rootfs.ErrNotCached) {
		t.Errorf("second Remove: %v, want ErrNotCached", err)
	}
	for _, d := range []string{"rootfs", "tmp"} {
		if names := dirNames(t, filepath.Join(root, d)); len(names) > 0 {
			t.Errorf("%s/ holds %v after Remove", d, names)
		}
	}
}

// blockLayer serves prefix (whole tar entries, more than one pipeline chunk) and then blocks
// until unblock is closed (or, in a helper process, forever), like a stalled download.
type blockLayer struct {
	prefix  []byte
	unblock chan struct{}
}

func (b blockLayer) Uncompressed(ctx context.Context) (io.ReadCloser, error) {
	return io.NopCloser(io.MultiReader(bytes.NewReader(b.prefix), blockReader{ctx, b.unblock})), nil
}

type blockReader struct {
	ctx     context.Context
	unblock chan struct{}
}

func (b blockReader) Read([]byte) (int, error) {
	select {
	case <-b.unblock:
		return 0, io.EOF
	case <-b.ctx.Done():
		return 0, b.ctx.Err()
	}
}

// stallPrefix is a tar prefix of several files totalling about 1 MiB (no end marker).
func stallPrefix() []byte {
	var es tl
	for i := range 8 {
		es = append(es, tFile(fmt.Sprintf("partial/%d", i), strings.Repeat("p", 128<<10)))
	}
	full := tartest.Tar(es...)
	return full[:len(full)-1024] // drop the end-of-archive blocks
}

// waitForBuild waits until tmp/ holds a build directory and returns its path.
func waitForBuild(t *testing.T, root string, done <-chan struct{}) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		for _, n := range dirNames(t, filepath.Join(root, "tmp")) {
			if strings.HasPrefix(n, "build-") {
				// Layers applied one by one write into the build directory, applied
				// concurrently into a directory per layer inside it.
				for _, sub := range []string{"", "1"} {
					if _, err := os.Stat(filepath.Join(root, "tmp", n, sub, "partial", "0")); err == nil {
						return filepath.Join(root, "tmp", n)
					}
				}
			}
		}
		select {
		case <-done:
			t.Fatal("the build ended before it was seen")
		case <-time.After(5 * time.Millisecond):
		}
	}
	t.Fatal("no build appeared in tmp/")
	return ""
}

func TestCacheCleanKeepsLiveBuilds(t *testing.T) {
	c, root := openCache(t)
	layers, want := cacheImage()
	// A leftover of a killed build of another key.
	other := digest.FromString("other image")
	leftover := filepath.Join(root, "tmp", "build-"+other.Encoded()+"-0123456789abcdef")
	mustMkdir(t, leftover)
	mustMkdir(t, filepath.Join(leftover, "ro"))
	mustWrite(t, filepath.Join(leftover, "ro", "f"), "x")
	if err := os.Chmod(filepath.Join(leftover, "ro"), 0o555); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(root, "tmp", "not-ours")
	mustWrite(t, foreign, "another package's file")

	unblock := make(chan struct{})
	stalled := append(layers[:1:1], blockLayer{stallPrefix(), unblock}, layers[1])
	done := make(chan struct{})
	var p string
	var err error
	go func() { defer close(done); p, err = c.Ensure(t.Context(), cacheKey, stalled) }()
	live := waitForBuild(t, root, done)

	if err := c.Clean(t.Context()); err != nil {
		t.Fatalf("Clean: %v", err)
	}
	if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("leftover build still there after Clean: %v", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("Clean removed a live build: %v", err)
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("Clean removed a file it does not own: %v", err)
	}
	close(unblock)
	<-done
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	want["partial"] = ownersOff(map[string]string{"x": "dir 0755 0:0"})["x"]
	for i := range 8 {
		want[fmt.Sprintf("partial/%d", i)] = ownersOff(map[string]string{"x": `file 0644 0:0 "` + strings.Repeat("p", 128<<10) + `"`})["x"]
	}
	if d := diffMaps(diskTree(t, p), want); d != "" {
		t.Errorf("%.1000s", d)
	}
}

// The helper process: when IMGRUN_ROOTFS_CACHE_HELPER is set, the test binary runs one
// Ensure against the cache ROOT it names and exits; the tests below start it.
const helperEnv = "IMGRUN_ROOTFS_CACHE_HELPER"

func TestCacheHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("helper process for the cache tests")
	}
	c, err := rootfs.OpenCache(os.Getenv("IMGRUN_ROOTFS_CACHE_ROOT"))
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := cacheImage()
	var opened atomic.Int64
	var use []rootfs.Layer
	for _, l := range layers {
		use = append(use, countLayer{l, &opened})
	}
	switch mode {
	case "stall": // blocks forever: killed by the test
		use = append(use[:1:1], blockLayer{stallPrefix(), make(chan struct{})}, use[1])
	case "slow": // blocks until stdin is closed
		unblock := make(chan struct{})
		go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(unblock) }()
		use = append(use[:1:1], blockLayer{stallPrefix(), unblock}, use[1])
	}
	p, err := c.Ensure(context.Background(), cacheKey, use)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("path=%s opened=%d\n", p, opened.Load())
}

func helper(t *testing.T, root, mode string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestCacheHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, "IMGRUN_ROOTFS_CACHE_ROOT="+root)
	return cmd
}

// TestCacheTwoProcesses runs Ensure for one key in two processes: the second starts while the
// first is building, waits for it and reuses the tree instead of building its own.
func TestCacheTwoProcesses(t *testing.T) {
	_, root := openCache(t)
	var outs [2]bytes.Buffer
	first := helper(t, root, "slow")
	first.Stdout, first.Stderr = &outs[0], &outs[0]
	stdin, err := first.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = first.Wait(); close(done) }()
	waitForBuild(t, root, done)

	second := helper(t, root, "ensure")
	second.Stdout, second.Stderr = &outs[1], &outs[1]
	if err := second.Start(); err != nil {
		t.Fatal(err)
	}
	stdin.Close() // let the first build finish
	<-done
	if first.ProcessState.ExitCode() != 0 {
		t.Fatalf("first helper: %s\n%s", first.ProcessState, outs[0].String())
	}
	if err := second.Wait(); err != nil {
		t.Fatalf("second helper: %v\n%s", err, outs[1].String())
	}
	layers, _ := cacheImage()
	for i, want := range []int{len(layers), 0} {
		var p string
		var n int
		line := outs[i].String()
		if j := strings.Index(line, "path="); j >= 0 {
			fmt.Sscanf(line[j:], "path=%s opened=%d", &p, &n)
		}
		if p != filepath.Join(root, "rootfs", cacheKey.Encoded()) || n != want {
			t.Errorf("helper %d printed %q, want the tree's path and opened=%d", i, line, want)
		}
	}
}

// TestCacheKilledBuild kills a process with SIGKILL in the middle of a build, then checks
// that Ensure builds the tree again from scratch and removes the leftover.
func TestCacheKilledBuild(t *testing.T) {
	c, root := openCache(t)
	cmd := helper(t, root, "stall")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	leftover := waitForBuild(t, root, done)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-done
	if c.Has(cacheKey) {
		t.Fatal("Has: true after a killed build")
	}
	layers, want := cacheImage()
	p, err := c.Ensure(t.Context(), cacheKey, layers)
	if err != nil {
		t.Fatalf("Ensure after the kill: %v", err)
	}
	if d := diffMaps(diskTree(t, p), want); d != "" {
		t.Errorf("rebuilt tree:\n%.1000s", d)
	}
	if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("killed build's tmp dir still there: %v", err)
	}
}

// TestCachePrune: Prune removes the trees keep rejects, keeps the kept and the held ones.
func TestCachePrune(t *testing.T) {
	c, _ := openCache(t)
	layers, _ := cacheImage()
	other := digest.FromString("another image")
	held := digest.FromString("a running image")
	for _, k := range []digest.Digest{cacheKey, other, held} {
		if _, err := c.Ensure(t.Context(), k, layers); err != nil {
			t.Fatal(err)
		}
	}
	release, err := c.Acquire(t.Context(), held)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	n, err := c.Prune(t.Context(), func(k digest.Digest) bool { return k == cacheKey })
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || !c.Has(cacheKey) || c.Has(other) || !c.Has(held) {
		t.Errorf("Prune removed %d; has kept=%v other=%v held=%v; want 1, true, false, true",
			n, c.Has(cacheKey), c.Has(other), c.Has(held))
	}
	release()
	if n, err := c.Prune(t.Context(), func(k digest.Digest) bool { return k == cacheKey }); err != nil || n != 1 || c.Has(held) {
		t.Errorf("second Prune = %d, %v; held tree still there: %v", n, err, c.Has(held))
	}
}
