package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/imgrun/imgrun/pkg/layers"
	"github.com/imgrun/imgrun/pkg/registry"
)

func (a *app) pullCommand() *cobra.Command {
	var platform string
	var jobs int
	c := &cobra.Command{
		Use:   "pull [--platform P] IMAGE",
		Short: "Download an image into the cache; print its pinned reference",
		Long: `Download an image's manifest, config and layers into the cache, verifying every byte.
Progress goes to stderr; the last line on stdout is the pinned reference NAME@sha256:….`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			what := "pull " + args[0]
			ref, err := registry.ParseReference(args[0])
			if err != nil {
				return fail(what, err)
			}
			if jobs < 0 {
				return fail(what, fmt.Errorf("invalid --jobs %d", jobs))
			}
			p, err := parsePlatform(platform)
			if err != nil {
				return fail(what, err)
			}
			st, err := a.openStore()
			if err != nil {
				return fail(what, err)
			}
			img, err := a.pull(cmd.Context(), st, ref, layers.PullOptions{Platform: p, Jobs: jobs})
			if err != nil {
				return fail(what, err)
			}
			_, err = fmt.Fprintln(a.stdout, img.Record.Pinned())
			return fail(what, err)
		},
	}
	c.Flags().StringVar(&platform, "platform", "", "`os/arch[/variant]` to pull (default: the host's)")
	c.Flags().IntVar(&jobs, "jobs", 0, "layers downloaded at once (default: the store's)")
	return c
}
