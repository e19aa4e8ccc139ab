package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// assemble stacks the layers into an OCI image with a node-like config. The config carries
// no creation time, so the image digest depends on the layers only.
func assemble(built []*fileLayer, dirs []string) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	adds := make([]mutate.Addendum, len(built))
	for i, l := range built {
		adds[i] = mutate.Addendum{Layer: l, History: v1.History{
			CreatedBy: "mkimage " + filepath.Base(dirs[i]),
		}}
	}
	img, err := mutate.Append(img, adds...)
	if err != nil {
		return nil, fmt.Errorf("assemble: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("assemble: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config = v1.Config{
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "NODE_ENV=production"},
		Cmd:        []string{"node"},
		WorkingDir: "/",
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("assemble: %w", err)
	}
	return img, nil
}

// writeLayout replaces dir with a fresh OCI image layout holding img under ref.
func writeLayout(dir, ref string, img v1.Image) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("write layout %s: %w", dir, err)
	}
	err = p.AppendImage(img,
		layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref}),
		layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))
	if err != nil {
		return fmt.Errorf("write layout %s: %w", dir, err)
	}
	return nil
}

// push sends img to a registry; loopback registries are spoken to over plain HTTP.
func push(ctx context.Context, ref string, img v1.Image) error {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	if err := remote.Write(r, img, remote.WithContext(ctx)); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	return nil
}

// report prints one line per layer and the totals the benchmark quotes.
func report(w io.Writer, out string, img v1.Image, built []*fileLayer, dirs []string) error {
	d, err := img.Digest()
	if err != nil {
		return err
	}
	var size, raw int64
	var entries int
	for i, l := range built {
		fmt.Fprintf(w, "layer %d %-6s %s %7.1f MB gzip %7.1f MB files %6d entries (%d whiteouts, %d opaque)\n",
			i+1, filepath.Base(dirs[i]), l.digest, float64(l.size)/1e6, float64(l.stats.Bytes)/1e6,
			l.stats.Entries, l.stats.Whiteouts, l.stats.Opaque)
		size += l.size
		raw += l.stats.Bytes
		entries += l.stats.Entries
	}
	fmt.Fprintf(w, "image %s: %d layers, %.1f MB compressed, %.1f MB of file data, %d entries, in %s\n",
		d, len(built), float64(size)/1e6, float64(raw)/1e6, entries, out)
	return nil
}
