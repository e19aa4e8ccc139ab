package distreg

import (
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Ref returns "HOST/repoTag", e.g. r.Ref("library/node:latest").
func (r *Registry) Ref(repoTag string) string { return r.Host + "/" + repoTag }

func (r *Registry) remoteOpts(t testing.TB) []remote.Option {
	o := []remote.Option{remote.WithContext(t.Context())} // ggcr's API; our own code takes ctx first
	if r.user != "" {
		o = append(o, remote.WithAuth(&authn.Basic{Username: r.user, Password: r.pass}))
	}
	return o
}

func (r *Registry) parse(t testing.TB, repoTag string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(r.Ref(repoTag), name.Insecure)
	if err != nil {
		t.Fatalf("reference %s: %v", repoTag, err)
	}
	return ref
}

// Push writes img to repoTag ("library/node:latest") with the registry's credentials and
// returns the image's manifest digest.
func (r *Registry) Push(t testing.TB, repoTag string, img v1.Image) v1.Hash {
	t.Helper()
	ref := r.parse(t, repoTag)
	if err := remote.Write(ref, img, r.remoteOpts(t)...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return d
}

// PushIndex writes a multi-platform index (and its images) to repoTag and returns the
// index digest.
func (r *Registry) PushIndex(t testing.TB, repoTag string, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	ref := r.parse(t, repoTag)
	if err := remote.WriteIndex(ref, idx, r.remoteOpts(t)...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return d
}
