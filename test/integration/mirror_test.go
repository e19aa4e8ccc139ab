//go:build integration

package integration

import (
	"strings"
	"testing"

	"github.com/imgrun/imgrun/internal/distreg"
	"github.com/imgrun/imgrun/internal/testimage"
	"github.com/imgrun/imgrun/internal/testreg"
	"github.com/imgrun/imgrun/pkg/registry"
)

// TestMirror puts a real distribution registry in proxy mode (a pull-through cache, as
// registry mirrors, Spegel and Dragonfly are) in front of an origin that answers like
// Docker Hub (bearer tokens from a realm), and pulls "node:latest" through it.
func TestMirror(t *testing.T) {
	origin := testreg.New(t, testreg.WithToken(testreg.TokenConfig{Service: "registry.docker.io"}))
	want := testimage.Busybox(t)
	origin.Push(t, "library/node:latest", want)
	mirror := distreg.Start(t, distreg.WithProxy(origin.URL))

	t.Run("through the mirror", func(t *testing.T) {
		lt := &loopbackOnly{} // Docker Hub is unreachable: the mirror must serve everything
		img, err := pull(t, openStore(t), "node:latest", registry.WithMirrors(mirror.URL), registry.WithTransport(lt), noRetry)
		if err != nil {
			t.Fatalf("pull node:latest through mirror: %v", err)
		}
		checkImage(t, img, want)
		if got := img.Record.Ref; got != "index.docker.io/library/node:latest" {
			t.Errorf("recorded as %q, want the normalized Docker Hub reference", got)
		}
		if r := lt.Refused(); len(r) > 0 {
			t.Errorf("tried to reach beyond the mirror: %v", r)
		}
		if mirror.CountRequests("", "/v2/library/node/manifests/latest") == 0 {
			t.Errorf("mirror saw no request for library/node:latest:\n%s", mirror.Requests())
		}
		// The mirror got it from the origin, through the Docker Hub-like token flow.
		if origin.Counter.Count("", testreg.KindToken) == 0 || origin.Counter.Count("GET", testreg.KindManifest) == 0 {
			t.Errorf("origin saw no token or manifest request from the mirror: %+v", origin.Counter.Requests())
		}
	})

	t.Run("mirror down falls back to the hub", func(t *testing.T) {
		down := distreg.Start(t, distreg.WithProxy(origin.URL))
		down.Stop()
		origin.Counter.Reset()
		// index.docker.io is played by the origin, reached over loopback.
		lt := &loopbackOnly{reroute: map[string]string{"index.docker.io": origin.Host}}
		img, err := pull(t, openStore(t), "node", registry.WithMirrors(down.URL), registry.WithTransport(lt), noRetry)
		if err != nil {
			t.Fatalf("pull node with the mirror down: %v", err)
		}
		checkImage(t, img, want)
		if origin.Counter.Count("", testreg.KindToken) == 0 {
			t.Errorf("the fallback did not go through the token flow: %+v", origin.Counter.Requests())
		}
	})

	t.Run("mirror and hub down", func(t *testing.T) {
		down := distreg.Start(t, distreg.WithProxy(origin.URL))
		down.Stop()
		lt := &loopbackOnly{}
		_, err := pull(t, openStore(t), "node:latest", registry.WithMirrors(down.URL), registry.WithTransport(lt), noRetry)
		if err == nil {
			t.Fatal("pull succeeded with every endpoint down")
		}
		if r := lt.Refused(); len(r) == 0 || !strings.Contains(r[0], "index.docker.io") {
			t.Errorf("did not fall back to index.docker.io after the mirror failed (refused: %v; err: %v)", r, err)
		}
	})
}
