package main

import (
	"context"
	"fmt"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/imgrun/imgrun/internal/progress"
	"github.com/imgrun/imgrun/pkg/layers"
	"github.com/imgrun/imgrun/pkg/rootfs"
)

func (a *app) gcCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Remove blobs and unpacked trees no cached image uses, and leftovers of interrupted work",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			st, err := a.openStore()
			if err != nil {
				return fail("gc", err)
			}
			rep, err := st.GC(ctx)
			if err != nil {
				return fail("gc", err)
			}
			trees, snaps, err := pruneRootfs(ctx, st, a.root)
			if err != nil {
				return fail("gc", err)
			}
			_, err = fmt.Fprintf(a.stdout, "removed %d blobs, freed %s; removed %d unpacked trees and %d layer snapshots\n",
				rep.Blobs, progress.FormatBytes(rep.BytesFreed), trees, snaps)
			return fail("gc", err)
		},
	}
}

// pruneRootfs removes the unpacked trees (ROOT/rootfs) of images no longer in the index, the
// layer snapshots (ROOT/snapshots) no image in the index is built on, and what interrupted
// builds left in ROOT/tmp. Trees and snapshots in use by a running run are kept.
func pruneRootfs(ctx context.Context, st *layers.Store, root string) (trees, snaps int, err error) {
	cache, err := rootfs.OpenCache(root)
	if err != nil {
		return 0, 0, err
	}
	recs, err := st.Images(ctx)
	if err != nil {
		return 0, 0, err
	}
	used := map[digest.Digest]bool{}
	chains := map[digest.Digest]bool{}
	chainsKnown := true
	for _, r := range recs {
		used[r.Descriptor.Digest] = true
		img, err := st.Load(ctx, r)
		if err != nil {
			chainsKnown = false // an unreadable config: keep every snapshot
			continue
		}
		for _, ch := range rootfs.ChainIDs(img.Config.RootFS.DiffIDs) {
			chains[ch] = true
		}
	}
	if trees, err = cache.Prune(ctx, func(k digest.Digest) bool { return used[k] }); err != nil {
		return trees, 0, err
	}
	if chainsKnown {
		snaps, err = cache.PruneSnapshots(ctx, func(ch digest.Digest) bool { return chains[ch] })
	}
	return trees, snaps, err
}
