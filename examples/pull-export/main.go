// Command pull-export pulls an image into an imgrun cache and writes its flattened root
// filesystem as one tar, using only the library packages:
//
//	pull-export [-root DIR] [-platform os/arch] REF FILE
//
// It shows the pull-and-unpack path a program embedding imgrun takes: parse the reference,
// open a source (a registry, an oci: layout or a docker-archive: file), pull it into the
// content-addressed store, and stream its layers through rootfs.Export.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgrun/imgrun/pkg/layers"
	"github.com/imgrun/imgrun/pkg/registry"
	"github.com/imgrun/imgrun/pkg/rootfs"
)

func main() {
	root := flag.String("root", os.TempDir()+"/pull-export-cache", "cache directory")
	platform := flag.String("platform", "", "os/arch[/variant] (default: the host's)")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: pull-export [-root DIR] [-platform os/arch] REF FILE")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := pullExport(ctx, *root, *platform, flag.Arg(0), flag.Arg(1)); err != nil {
		fmt.Fprintln(os.Stderr, "pull-export:", err)
		os.Exit(1)
	}
}

func pullExport(ctx context.Context, root, platform, name, file string) error {
	ref, err := registry.ParseReference(name)
	if err != nil {
		return err
	}
	var p ocispec.Platform // zero: the host's
	if platform != "" {
		if p, err = registry.ParsePlatform(platform); err != nil {
			return err
		}
	}
	client, err := registry.New() // ~/.docker/config.json credentials; loopback registries over HTTP
	if err != nil {
		return err
	}
	src, err := client.Open(ref)
	if err != nil {
		return err
	}
	store, err := layers.Open(root)
	if err != nil {
		return err
	}
	img, err := store.Pull(ctx, src, layers.PullOptions{Platform: p})
	if err != nil {
		return err
	}
	fmt.Println(img.Record.Pinned())

	var ls []rootfs.Layer
	for _, l := range img.Layers() {
		ls = append(ls, l)
	}
	out, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := rootfs.Export(ctx, out, ls); err != nil {
		out.Close()
		os.Remove(file)
		return fmt.Errorf("export %s: %w", ref, err)
	}
	return out.Close()
}
