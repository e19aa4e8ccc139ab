package layers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sync/errgroup"

	"github.com/imgrun/imgrun/internal/testreg"
	"github.com/imgrun/imgrun/pkg/registry"
)

func init() { children["pull-unpack"] = pullUnpackChild }

// pullUnpackChild pulls $REF into $ROOT and reads every layer's uncompressed stream, two
// at a time, as an unpacker would.
func pullUnpackChild() error {
	ctx := context.Background()
	s, err := Open(os.Getenv("ROOT"))
	if err != nil {
		return err
	}
	c, err := registry.New(registry.WithKeychain(authn.NewMultiKeychain()))
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
	img, err := s.Pull(ctx, src, PullOptions{Platform: amd64})
	if err != nil {
		return err
	}
	var g errgroup.Group
	g.SetLimit(2)
	for _, l := range img.Layers() {
		g.Go(func() error {
			rc, err := l.Uncompressed(ctx)
			if err != nil {
				return err
			}
			_, err = io.Copy(io.Discard, rc)
			return errors.Join(err, rc.Close())
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// VmHWM is this process's peak RSS (rusage's maxrss of a vforked child can include
	// the parent's before exec).
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err
	}
	for line := range strings.Lines(string(status)) {
		if strings.HasPrefix(line, "VmHWM:") {
			return os.WriteFile(os.Getenv("OUT"), []byte(strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:"))), 0o600)
		}
	}
	return errors.New("no VmHWM in /proc/self/status")
}

// TestPullMemory: pulling and decompressing an image of 3 × 24 MB layers stays far below
// the 64 MiB peak RSS budget: bytes stream, nothing holds a whole layer.
func TestPullMemory(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("builds a 72 MB image; memory is meaningless under -race")
	}
	reg := testreg.New(t)
	var ls []v1.Layer
	for i := range 3 {
		gz := gzipBytes(t, seededTar(t, uint64(i+1), 24, 1<<20))
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(gz)), nil })
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	reg.Push(t, "big:1", testreg.Image(t, "linux/amd64", ls...))

	dir := t.TempDir()
	out := filepath.Join(dir, "hwm")
	cmd := child(t, "pull-unpack", "ROOT="+filepath.Join(dir, "root"), "REF="+reg.Ref("big:1"), "OUT="+out)
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	hwm, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var kib int64
	if _, err := fmt.Sscanf(string(hwm), "%d kB", &kib); err != nil {
		t.Fatalf("VmHWM %q: %v", hwm, err)
	}
	maxRSS := kib << 10
	t.Logf("peak RSS of pull + decompress: %.1f MiB", float64(maxRSS)/(1<<20))
	if maxRSS > 64<<20 {
		t.Errorf("peak RSS %d MiB, over the 64 MiB budget", maxRSS>>20)
	}
}
