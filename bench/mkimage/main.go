// Command mkimage turns a base directory tree plus overlayfs upper directories into a
// multi-layer OCI image (gzip layers), converting overlay whiteouts (0:0 character devices)
// to .wh.NAME entries and opaque directories (trusted.overlay.opaque=y) to .wh..wh..opq.
// It writes an OCI image layout and can push the image to a registry.
//
//	mkimage -o DIR [-ref NAME] [-exclude GLOB,...] [-push REF] BASE UPPER...
//
// Layers are built concurrently (one per core); each layer's bytes depend only on its tree
// (sorted walk, the files' own mtimes, numeric ids), so rebuilding the same trees gives the
// same digests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sync/errgroup"
)

func main() {
	var o options
	flag.StringVar(&o.out, "o", "", "OCI image layout `dir` to (re)create (required)")
	flag.StringVar(&o.ref, "ref", "bench/node:latest", "org.opencontainers.image.ref.name of the image in the layout")
	flag.StringVar(&o.exclude, "exclude", "", "comma-separated `globs` (relative slash paths) left out of every layer")
	flag.StringVar(&o.push, "push", "", "also push the image to this `reference` (plain HTTP for loopback registries)")
	flag.IntVar(&o.level, "level", 6, "gzip `level`")
	flag.IntVar(&o.jobs, "j", runtime.NumCPU(), "layers built at once")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: mkimage -o DIR [flags] BASE [UPPER...]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	o.dirs = flag.Args()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

type options struct {
	out, ref, exclude, push string
	level, jobs             int
	dirs                    []string
}

func run(ctx context.Context, o options) error {
	if o.out == "" || len(o.dirs) == 0 {
		flag.Usage()
		return errors.New("need -o and at least one directory")
	}
	var excludes []string
	for _, g := range strings.Split(o.exclude, ",") {
		if g = strings.TrimSpace(g); g != "" {
			excludes = append(excludes, g)
		}
	}
	work := o.out + ".layers"
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(work)

	built := make([]*fileLayer, len(o.dirs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(o.jobs, 1))
	for i, dir := range o.dirs {
		g.Go(func() error {
			l, err := buildLayer(gctx, filepath.Join(work, fmt.Sprintf("%d.tar.gz", i)), dir, i > 0, excludes, o.level)
			built[i] = l
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	img, err := assemble(built, o.dirs)
	if err != nil {
		return err
	}
	if err := writeLayout(o.out, o.ref, img); err != nil {
		return err
	}
	if o.push != "" {
		if err := push(ctx, o.push, img); err != nil {
			return err
		}
	}
	return report(os.Stdout, o.out, img, built, o.dirs)
}
