package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/imgrun/imgrun/pkg/layers"
	"github.com/imgrun/imgrun/pkg/registry"
)

func (a *app) inspectCommand() *cobra.Command {
	var platform string
	var manifest bool
	c := &cobra.Command{
		Use:   "inspect [--platform P] [--manifest] IMAGE",
		Short: "Print an image's config (or manifest) as JSON",
		Long: `Print the image config (or, with --manifest, the platform manifest) as indented JSON.
A cached image is read from the cache; otherwise the registry is asked, without pulling layers.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			what := "inspect " + args[0]
			ref, err := registry.ParseReference(args[0])
			if err != nil {
				return fail(what, err)
			}
			p, err := parsePlatform(platform)
			if err != nil {
				return fail(what, err)
			}
			raw, err := a.inspect(cmd.Context(), ref, p, manifest)
			if err != nil {
				return fail(what, err)
			}
			var out bytes.Buffer
			if err := json.Indent(&out, raw, "", "  "); err != nil {
				return fail(what, err)
			}
			out.WriteByte('\n')
			_, err = out.WriteTo(a.stdout)
			return fail(what, err)
		},
	}
	c.Flags().StringVar(&platform, "platform", "", "`os/arch[/variant]` to inspect (default: the host's)")
	c.Flags().BoolVar(&manifest, "manifest", false, "print the manifest instead of the config")
	return c
}

// inspect returns the raw config or manifest bytes: from the store when the image is
// cached, else resolved on the registry (manifest and config only).
func (a *app) inspect(ctx context.Context, ref registry.Reference, p ocispec.Platform, manifest bool) ([]byte, error) {
	st, err := a.openStore()
	if err != nil {
		return nil, err
	}
	rec, err := st.Lookup(ctx, ref, p)
	switch {
	case err == nil:
		d := rec.Descriptor.Digest
		if !manifest {
			img, err := st.Load(ctx, rec)
			if err != nil {
				return nil, err
			}
			return img.ConfigBytes, nil
		}
		return st.ReadBlob(ctx, d, registry.MaxManifestSize)
	case !errors.Is(err, layers.ErrNotCached):
		return nil, err
	}
	c, err := a.client()
	if err != nil {
		return nil, err
	}
	src, err := c.Open(ref)
	if err != nil {
		return nil, err
	}
	img, err := src.Resolve(ctx, p, func(d digest.Digest) ([]byte, bool) {
		if !st.Has(d) {
			return nil, false
		}
		b, err := st.ReadBlob(ctx, d, registry.MaxManifestSize)
		return b, err == nil
	})
	if err != nil {
		return nil, err
	}
	if manifest {
		return img.ManifestBytes, nil
	}
	return img.ConfigBytes, nil
}
