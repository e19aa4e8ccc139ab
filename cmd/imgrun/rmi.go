package main

import (
	"errors"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/imgrun/imgrun/pkg/layers"
	"github.com/imgrun/imgrun/pkg/registry"
)

// errNoSuchImage is what rmi says when the reference is not in the cache.
var errNoSuchImage = errors.New("no such image")

func (a *app) rmiCommand() *cobra.Command {
	var platform string
	c := &cobra.Command{
		Use:   "rmi [--platform P] IMAGE...",
		Short: "Remove images from the cache index (run gc to free their blobs)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := a.openStore()
			if err != nil {
				return fail("rmi", err)
			}
			var only *ocispec.Platform
			if platform != "" {
				p, err := registry.ParsePlatform(platform)
				if err != nil {
					return fail("rmi", err)
				}
				only = &p
			}
			for _, arg := range args {
				ref, err := registry.ParseReference(arg)
				if err != nil {
					return fail("rmi "+arg, err)
				}
				if err := st.Remove(cmd.Context(), ref, only); err != nil {
					if errors.Is(err, layers.ErrNotCached) || errors.Is(err, layers.ErrNotFound) {
						err = errNoSuchImage
					}
					return fail("rmi "+arg, err)
				}
				fmt.Fprintln(a.stdout, "Untagged: "+ref.String())
			}
			return nil
		},
	}
	c.Flags().StringVar(&platform, "platform", "", "remove only this `os/arch[/variant]` (default: all platforms)")
	return c
}
