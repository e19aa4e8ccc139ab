package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/imgrun/imgrun/pkg/layers"
	"github.com/imgrun/imgrun/pkg/rootfs"
)

func (a *app) exportCommand() *cobra.Command {
	var platform, output, pull string
	c := &cobra.Command{
		Use:   "export [--platform P] IMAGE -o FILE|-",
		Short: "Write an image's flattened root filesystem as one tar (deterministic)",
		Long: `Stream the flattened root filesystem as one tar, straight from the cached layers.
-o FILE writes FILE (atomically: a failed export leaves no FILE); -o - writes to stdout.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			what := "export " + args[0]
			ctx := cmd.Context()
			if output == "" {
				return fail(what, errors.New("missing -o FILE (or -o - for stdout)"))
			}
			if output == "-" {
				if f, ok := a.stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
					return fail(what, errors.New("refusing to write a tar to a terminal; redirect stdout or use -o FILE"))
				}
			}
			// Exporting starts while the layers still download (see imageBuild).
			return fail(what, a.buildImage(ctx, args[0], platform, pull, func(ctx context.Context, _ *layers.Image, ls []rootfs.Layer) error {
				if output == "-" {
					w := &countingWriter{w: a.stdout}
					err := rootfs.Export(ctx, w, ls)
					if w.n > 0 && errors.Is(err, layers.ErrStreamRestarted) {
						// Part of the tar is out already: building it again would append a
						// second one. Not retryable here.
						return fmt.Errorf("%s; the output is incomplete, run again", err)
					}
					return err
				}
				return rootfs.ExportFile(ctx, output, ls)
			}))
		},
	}
	c.Flags().StringVar(&platform, "platform", "", "`os/arch[/variant]` to export (default: the host's)")
	c.Flags().StringVarP(&output, "output", "o", "", "write the tar to `FILE` (- for stdout)")
	c.Flags().StringVar(&pull, "pull", pullMissing, "pull the image first: missing, always or never")
	return c
}

// countingWriter counts what went through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
