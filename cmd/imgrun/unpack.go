package main

import (
	"context"
	"errors"
	"os"
	"runtime/pprof"
	"sync/atomic"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
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
			defer startCPUProfile()()
			dir := args[1]
			return fail(what, a.buildImage(ctx, args[0], platform, pull, func(ctx context.Context, _ *layers.Image, ls []rootfs.Layer) error {
				return rootfs.Flatten(ctx, dir, ls, rootfs.WithLogger(a.log))
			}))
		},
	}
	c.Flags().StringVar(&platform, "platform", "", "`os/arch[/variant]` to unpack (default: the host's)")
	c.Flags().StringVar(&pull, "pull", pullMissing, "pull the image first: missing, always or never")
	return c
}

// buildImage is the body of unpack and export: it parses the image argument and its
// --platform and --pull flags, then runs build on the image's layers ([app.imageBuild]).
func (a *app) buildImage(ctx context.Context, image, platform, pull string, build buildFunc) error {
	ref, err := registry.ParseReference(image)
	if err != nil {
		return err
	}
	p, err := parsePlatform(platform)
	if err != nil {
		return err
	}
	policy, err := parsePullPolicy(pull)
	if err != nil {
		return err
	}
	st, err := a.openStore()
	if err != nil {
		return err
	}
	_, err = a.imageBuild(ctx, st, ref, p, policy, build)
	return err
}

// buildFunc builds something from an image's layers (a rootfs tree, an export).
type buildFunc func(ctx context.Context, img *layers.Image, ls []rootfs.Layer) error

// imageBuild gets ref's image as [app.image] does and runs build on its layers, with the store
// held against gc. When the image has to be pulled, build starts as soon as the manifest is
// resolved, on layers that become ready one by one as their blobs are verified
// ([rootfs.Pending]): extraction of the first layers overlaps the download of the others.
func (a *app) imageBuild(ctx context.Context, st *layers.Store, ref registry.Reference, p ocispec.Platform, policy string, build buildFunc) (*layers.Image, error) {
	release, err := st.Hold(ctx) // keep gc away from the blobs being read
	if err != nil {
		return nil, err
	}
	defer release()
	if policy != pullAlways {
		img, err := a.image(ctx, st, ref, p, pullNever)
		if err == nil {
			return img, build(ctx, img, rootfsLayers(img))
		}
		if !errors.Is(err, layers.ErrNotCached) || policy == pullNever {
			return nil, err
		}
	}
	return a.pullBuild(ctx, st, ref, p, build)
}

// pullBuild pulls ref and runs build concurrently on the layers as they land.
func (a *app) pullBuild(ctx context.Context, st *layers.Store, ref registry.Reference, platform ocispec.Platform, build buildFunc) (*layers.Image, error) {
	// A failed build stops the download; a failed download stops the build (Pending.Fail).
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var pend *rootfs.Pending
	var buildFailed atomic.Bool
	built := make(chan error, 1)
	img, err := a.pull(ctx, st, ref, layers.PullOptions{
		Platform: platform,
		Resolved: func(img *layers.Image) {
			pend = rootfs.NewPending(len(img.Manifest.Layers))
			go func() {
				err := build(ctx, img, pend.Layers())
				if err != nil && !errors.Is(err, layers.ErrStreamRestarted) {
					buildFailed.Store(true)
					cancel(err)
				}
				built <- err
			}()
		},
		// Layers are unpacked as they download (LayerStarted); a layer that was cached or
		// whose download resumed a partial file is handed over once committed (LayerReady).
		LayerStarted: func(i int, l layers.Layer) {
			a.log.Debug("layer download started", "layer", i+1)
			pend.Ready(i, l)
		},
		LayerReady: func(i int, l layers.Layer) {
			a.log.Debug("layer ready", "layer", i+1)
			pend.Ready(i, l)
		},
	})
	if pend == nil { // failed before the build started
		return nil, err
	}
	if err != nil {
		first := buildFailed.Load()
		pend.Fail(err)
		if berr := <-built; first {
			return nil, berr // the build failed first and stopped the pull
		}
		return nil, err
	}
	if err := <-built; !errors.Is(err, layers.ErrStreamRestarted) {
		return img, err
	}
	// A download started over while it was being unpacked: build again from the blobs,
	// all verified now.
	a.log.Debug("building again from the committed layers", "reason", layers.ErrStreamRestarted)
	return img, build(ctx, img, rootfsLayers(img))
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

// startCPUProfile writes a CPU profile of the command to the file named by the hidden
// IMGRUN_CPUPROFILE environment variable (for docs/PERFORMANCE.md); it returns the stop
// function. Without the variable it does nothing.
func startCPUProfile() (stop func()) {
	path := os.Getenv("IMGRUN_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// runRoot is the root filesystem of a run: a layer stack (Top over Lowers, pkg/rootfs
// snapshots) or one flat tree (Top alone).
type runRoot struct {
	Top     string
	Lowers  []string
	release func()
}

// buildRunRoot gets img's root filesystem for a run, held until release. As root it is the
// image's per-layer snapshots, shared with every image on the same base layers, so a new
// image costs only its own layers; an image whose layers need each other
// (rootfs.ErrNeedsLowers), a rootless caller, or IMGRUN_SNAPSHOTS=0 get a flat tree from the
// rootfs cache instead, as does an image whose flat tree is cached already.
func (a *app) buildRunRoot(ctx context.Context, cache *rootfs.Cache, img *layers.Image, ls []rootfs.Layer) (runRoot, error) {
	key := img.Record.Descriptor.Digest
	opts := []rootfs.ApplyOption{rootfs.WithLogger(a.log)}
	if os.Getenv("IMGRUN_SNAPSHOTS") != "0" && !cache.Has(key) {
		stack, release, err := cache.Snapshots(ctx, img.Config.RootFS.DiffIDs, ls, opts...)
		if err == nil {
			return runRoot{Top: stack[0], Lowers: stack[1:], release: release}, nil
		}
		if !errors.Is(err, rootfs.ErrNeedsLowers) {
			return runRoot{}, err
		}
		a.log.Debug("flattening instead of snapshots", "image", key, "reason", err)
		// The concurrent apply of a flat build would fail the same way: go in order at once.
		opts = append(opts, rootfs.WithLayersInOrder())
	}
	path, release, err := cache.Use(ctx, key, ls, opts...)
	if err != nil {
		return runRoot{}, err
	}
	return runRoot{Top: path, release: release}, nil
}
