package layers

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgrun/imgrun/internal/testreg"
	"github.com/imgrun/imgrun/pkg/registry"
)

func init() { children["ensure"] = ensureChild }

// ensureChild ensures the blob in $SRC into the store at $ROOT, fetching it slowly from
// the file and appending one line to $LOG per fetch.
func ensureChild() error {
	data, err := os.ReadFile(os.Getenv("SRC"))
	if err != nil {
		return err
	}
	s, err := Open(os.Getenv("ROOT"))
	if err != nil {
		return err
	}
	f := &sliceFetcher{data: data, serve: func(_ int, off int64, body []byte) (io.ReadCloser, int64, error) {
		log, err := os.OpenFile(os.Getenv("LOG"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, 0, err
		}
		log.WriteString("fetch\n")
		log.Close()
		return io.NopCloser(&slowReader{r: bytes.NewReader(body)}), off, nil
	}}
	return s.Ensure(context.Background(), descOf(ocispec.MediaTypeImageLayer, data), f, nil)
}

// slowReader hands out 64 KiB per millisecond, so that two processes overlap.
type slowReader struct{ r io.Reader }

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(time.Millisecond)
	return s.r.Read(p[:min(len(p), 64<<10)])
}

// child starts the test binary in a child role.
func child(t *testing.T, role string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{childEnv + "=" + role}, env...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("child %s output:\n%s", role, out.String())
		}
	})
	return cmd
}

// TestEnsureTwoProcesses: two processes ensure the same blob at the same time; both
// succeed, the blob is fetched once and stored once.
func TestEnsureTwoProcesses(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(5, 4<<20)
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	log := filepath.Join(dir, "log")
	var cmds []*exec.Cmd
	for range 2 {
		cmd := child(t, "ensure", "SRC="+src, "ROOT="+root, "LOG="+log)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("child: %v", err)
		}
	}
	fetches, _ := os.ReadFile(log)
	if n := strings.Count(string(fetches), "fetch"); n != 1 {
		t.Errorf("blob fetched %d times by the two processes, want 1", n)
	}
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := s.OpenBlob(t.Context(), descOf("", data))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.Copy(io.Discard, rc); err != nil {
		t.Fatalf("stored blob does not verify: %v", err)
	}
	if names := dirNames(t, s.blobs); len(names) != 1 || names[0] != digest.FromBytes(data).Encoded() {
		t.Errorf("blobs/ = %v", names)
	}
}

func init() { children["pull"] = pullChild }

// pullChild pulls $REF into the store at $ROOT.
func pullChild() error {
	s, err := Open(os.Getenv("ROOT"))
	if err != nil {
		return err
	}
	c, err := registry.New(registry.WithKeychain(authn.NewMultiKeychain()), registry.WithRetry(fastRetry))
	if err != nil {
		return err
	}
	ref, err := registry.ParseReference(os.Getenv("REF"))
	if err != nil {
		return err
	}
	src, err := c.Open(ref)
	if err != nil {
		return err
	}
	_, err = s.Pull(context.Background(), src, PullOptions{Platform: amd64})
	return err
}

// TestPullKilled: a pull killed with SIGKILL in the middle of a layer leaves nothing a
// later pull would trust; the next pull succeeds and resumes the layer with a Range
// request.
func TestPullKilled(t *testing.T) {
	img := testImage(t, "linux/amd64", 70, 1<<20)
	big, size := largestLayer(t, img)
	stallAt := int(size / 2)
	reg := testreg.New(t, testreg.WithFaults(testreg.Fault{
		Method: "GET", Kind: testreg.KindBlob, PathContains: big.Hex, Times: 1, Action: testreg.StallAfter(stallAt),
	}))
	reg.Push(t, "app:1", img)
	root := filepath.Join(t.TempDir(), "root")

	cmd := child(t, "pull", "ROOT="+root, "REF="+reg.Ref("app:1"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	partial := filepath.Join(root, "ingest", big.Hex+".partial")
	for {
		if fi, err := os.Stat(partial); err == nil && fi.Size() >= int64(stallAt) {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("the child ended before the stall: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited

	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	if s.Has(digest.Digest(big.String())) {
		t.Fatal("a half-downloaded layer is in blobs/")
	}
	if recs, _ := s.Images(t.Context()); len(recs) != 0 {
		t.Fatalf("index.json lists %+v after a killed pull", recs)
	}
	reg.Counter.Reset()
	if _, err := s.Pull(t.Context(), source(t, reg.Host, "app:1"), PullOptions{Platform: amd64}); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("bytes=%d-", stallAt)
	if r := reg.Counter.Ranges(); !slices.ContainsFunc(r, func(s string) bool { return strings.HasPrefix(s, want) }) {
		t.Errorf("resume ranges %v, want %s", r, want)
	}
	rep, err := s.Verify(t.Context())
	if err != nil || len(rep.Corrupt) != 0 || len(rep.Missing) != 0 {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
}

// TestPullTwoProcesses: two processes pull the same image into one root at the same
// time; both succeed and each blob is fetched once.
func TestPullTwoProcesses(t *testing.T) {
	reg := testreg.New(t, testreg.WithFaults(testreg.Fault{
		// Slow the big layer down so that the two pulls overlap on it.
		Method: "GET", Kind: testreg.KindBlob, Action: testreg.Trickle(64<<10, 2*time.Millisecond),
	}))
	img := testImage(t, "linux/amd64", 100, 1<<20)
	reg.Push(t, "app:1", img)
	root := filepath.Join(t.TempDir(), "root")
	var cmds []*exec.Cmd
	for range 2 {
		cmd := child(t, "pull", "ROOT="+root, "REF="+reg.Ref("app:1"))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("child pull: %v", err)
		}
	}
	ls, _ := img.Layers()
	for _, l := range ls {
		d, _ := l.Digest()
		if n := blobGets(reg, d.Hex); n != 1 {
			t.Errorf("layer %s fetched %d times, want 1", d, n)
		}
	}
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := s.Images(t.Context())
	if err != nil || len(recs) != 1 {
		t.Fatalf("index.json: %+v, %v", recs, err)
	}
	if rep, err := s.Verify(t.Context()); err != nil || len(rep.Corrupt)+len(rep.Missing) != 0 {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
}
