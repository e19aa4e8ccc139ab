//go:build chaos

package chaos

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imgrun/imgrun/pkg/registry"
)

// FuzzParsePlatform checks that a parsed platform formats to a string that parses back to
// the same platform, and that errors wrap ErrBadReference.
//
//	go test -tags chaos ./test/chaos -run '^$' -fuzz FuzzParsePlatform -fuzztime 10m
func FuzzParsePlatform(f *testing.F) {
	for _, s := range []string{"linux/amd64", "linux/arm64/v8", "linux/arm", "linux/x86_64", "windows/amd64", "a/b/c/d", "/", "linux//"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := registry.ParsePlatform(s)
		if err != nil {
			if !errors.Is(err, registry.ErrBadReference) {
				t.Fatalf("%q: error %v does not wrap ErrBadReference", s, err)
			}
			return
		}
		s2 := registry.FormatPlatform(p)
		p2, err := registry.ParsePlatform(s2)
		if err != nil || p2.OS != p.OS || p2.Architecture != p.Architecture || p2.Variant != p.Variant {
			t.Fatalf("%q → %+v → %q → %+v, %v", s, p, s2, p2, err)
		}
	})
}

// FuzzResolveLayout decodes fuzzed index.json, manifest and config documents through the
// public API (an oci: layout resolved with Source.Resolve for a fuzzed platform): it must never
// panic or hang, and whatever it accepts must be consistent (bytes match their digests, the
// config is the manifest's, a requested platform is honoured).
//
// The manifest may contain CONFIG_DIGEST and CONFIG_SIZE, the index MANIFEST_DIGEST and
// MANIFEST_SIZE: they are replaced by the real values, so the fuzzer reaches the decoders.
//
//	go test -tags chaos ./test/chaos -run '^$' -fuzz FuzzResolveLayout -fuzztime 10m
func FuzzResolveLayout(f *testing.F) {
	const cfg = `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{"Cmd":["sh"]}}`
	const man = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"CONFIG_DIGEST","size":CONFIG_SIZE},"layers":[]}`
	const idx = `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"MANIFEST_DIGEST","size":MANIFEST_SIZE,"platform":{"os":"linux","architecture":"amd64"},"annotations":{"org.opencontainers.image.ref.name":"x"}}]}`
	const dockerMan = `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"CONFIG_DIGEST","size":CONFIG_SIZE},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"CONFIG_DIGEST","size":CONFIG_SIZE}]}`
	f.Add([]byte(idx), []byte(man), []byte(cfg), "")
	f.Add([]byte(idx), []byte(man), []byte(cfg), "linux/amd64")
	f.Add([]byte(idx), []byte(man), []byte(cfg), "linux/arm64")
	f.Add([]byte(idx), []byte(dockerMan), []byte(cfg), "")
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"MANIFEST_DIGEST","size":MANIFEST_SIZE}]}`), []byte(idx), []byte(cfg), "")
	f.Add([]byte(`{}`), []byte(`null`), []byte(`[]`), "linux/arm/v7")
	f.Fuzz(func(t *testing.T, index, manifest, config []byte, platform string) {
		if len(index)+len(manifest)+len(config) > 1<<16 {
			return
		}
		dir := t.TempDir()
		cd := writeBlob(t, dir, config)
		manifest = bytes.ReplaceAll(manifest, []byte("CONFIG_DIGEST"), []byte(cd))
		manifest = bytes.ReplaceAll(manifest, []byte("CONFIG_SIZE"), []byte(fmt.Sprint(len(config))))
		md := writeBlob(t, dir, manifest)
		index = bytes.ReplaceAll(index, []byte("MANIFEST_DIGEST"), []byte(md))
		index = bytes.ReplaceAll(index, []byte("MANIFEST_SIZE"), []byte(fmt.Sprint(len(manifest))))
		must(t, os.WriteFile(filepath.Join(dir, "index.json"), index, 0o644))
		must(t, os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644))

		p, err := registry.ParsePlatform(platform)
		if err != nil {
			p = registry.HostPlatform()
			p.OS, p.Architecture, p.Variant = "", "", ""
		}
		ref, err := registry.ParseReference("oci:" + dir + ":x")
		if err != nil {
			t.Fatalf("parse oci reference: %v", err)
		}
		c, err := registry.New()
		must(t, err)
		src, err := c.Open(ref)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// A Resolve that ignores its ctx would hang the fuzz worker silently: panic instead,
		// so that the fuzzer records the input.
		var img *registry.Image
		done := make(chan struct{})
		go func() { defer close(done); img, err = src.Resolve(ctx, p, nil) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			panic(fmt.Sprintf("Resolve still running 5 s after its ctx expired (platform %q)", platform))
		}
		if ctx.Err() != nil {
			t.Fatalf("Resolve ran until its deadline")
		}
		if err != nil {
			return
		}
		if got := digest.FromBytes(img.ManifestBytes); got != img.Descriptor.Digest {
			t.Fatalf("manifest bytes hash to %s, descriptor says %s", got, img.Descriptor.Digest)
		}
		if got := digest.FromBytes(img.ConfigBytes); got != img.Manifest.Config.Digest {
			t.Fatalf("config bytes hash to %s, manifest says %s", got, img.Manifest.Config.Digest)
		}
		if p.OS != "" && (img.Platform.OS != p.OS || img.Platform.Architecture != p.Architecture) {
			t.Fatalf("asked for %s, got %s", registry.FormatPlatform(p), registry.FormatPlatform(img.Platform))
		}
	})
}

// writeBlob stores b under blobs/sha256 of the layout dir and returns its digest.
func writeBlob(t *testing.T, dir string, b []byte) string {
	sum := sha256.Sum256(b)
	d := fmt.Sprintf("sha256:%x", sum)
	p := filepath.Join(dir, "blobs", "sha256", fmt.Sprintf("%x", sum))
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, b, 0o644))
	return d
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
