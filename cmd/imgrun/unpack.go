package main

import (
	"github.com/spf13/cobra"

	"github.com/imgrun/imgrun/pkg/layers"
	"github.com/imgrun/imgrun/pkg/registry"
	"github.com/imgrun/imgrun/pkg/rootfs"
)

func (a *app) unpackCommand() *cobra.Command {
	var platform, pull string
	c := &cobra.Command{
		Use:   "unpack [--platform P] IMAGE DIR",
		Short: "Write an image's flattened root filesystem into a new or empty directory",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			what := "unpack " + args[0]
			ctx := cmd.Context()
			ref, err := registry.ParseReference(args[0])
			if err != nil {
				return fail(what, err)
			}
			p, err := parsePlatform(platform)
			if err != nil {
				return fail(what, err)
			}
			policy, err := parsePullPolicy(pull)
			if err != nil {
				return fail(what, err)
			}
			st, err := a.openStore()
			if err != nil {
				return fail(what, err)
			}
			img, err := a.image(ctx, st, ref, p, policy)
			if err != nil {
				return fail(what, err)
			}
			release, err := st.Hold(ctx) // keep gc away from the blobs being read
			if err != nil {
				return fail(what, err)
			}
			defer release()
			return fail(what, rootfs.Flatten(ctx, args[1], rootfsLayers(img), rootfs.WithLogger(a.log)))
		},
	}
	c.Flags().StringVar(&platform, "platform", "", "`os/arch[/variant]` to unpack (default: the host's)")
	c.Flags().StringVar(&pull, "pull", pullMissing, "pull the image first: missing, always or never")
	return c
}

// rootfsLayers adapts an image's layers to what pkg/rootfs consumes.
func rootfsLayers(img *layers.Image) []rootfs.Layer {
	ls := img.Layers()
	out := make([]rootfs.Layer, len(ls))
	for i, l := range ls {
		out[i] = l
	}
	return out
}
