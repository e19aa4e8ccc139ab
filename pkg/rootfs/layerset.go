package rootfs

import (
	"context"

	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"time"
)

// layerSet applies the layers of one image concurrently, each into its own empty directory
// in upper mode ([applyUpper]), and completes each ([finishUpper]) once the layers below it
// are complete. Snapshots ([Cache.Snapshots]) keep the directories as overlayfs layers;
// [Flatten] merges them into one tree ([mergeLayers]).
type layerSet struct {
	layers []Layer
	o      *applyOptions
	// dirs holds each layer's directory: being built, or (layers not built here) complete.
	dirs []string
	// done is closed when a layer built here is complete or failed.
	done []chan struct{}
	// states holds what applying each built layer left (its opaque directories, for a merge).
	states []*upperState
	// errs holds each built layer's failure; the first cancels the others.
	errs []error
}

func newLayerSet(layers []Layer, o *applyOptions) *layerSet {
	n := len(layers)
	return &layerSet{layers: layers, o: o, dirs: make([]string, n), done: make([]chan struct{}, n),
		states: make([]*upperState, n), errs: make([]error, n)}
}

// build applies the layers build (ascending indexes; the others' dirs are complete) into
// their dirs, which exist and are empty, and writes back flushDir's filesystem meanwhile. It
// returns the first failure; the layers' own errors are in errs.
func (s *layerSet) build(ctx context.Context, build []int, flushDir string) error {
	for _, i := range build {
		s.done[i] = make(chan struct{})
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Layers are applied concurrently, a few at a time: each also keeps a decoding goroutine
	// busy, so one more than the CPUs keeps both kinds of work fed.
	sem := make(chan struct{}, runtime.GOMAXPROCS(0)+1)
	var wg sync.WaitGroup
	for _, i := range build {
		wg.Go(func() {
			defer close(s.done[i])
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				s.errs[i] = context.Cause(ctx)
				return
			}
			if err := s.layer(ctx, i, sem); err != nil {
				s.errs[i] = fmt.Errorf("layer %d of %d: %w", i+1, len(s.layers), namingDisk(err, s.dirs[i]))
				cancel(s.errs[i])
			}
		})
	}
	stopFlush := flushWhile(flushDir)
	wg.Wait()
	stopFlush()
	// The first failure is the one to report: the others may only have been cancelled by it.
	return context.Cause(ctx)
}

// layer applies layer i into its directory, releases its slot in sem, waits for the layers
// below it and completes it.
func (s *layerSet) layer(ctx context.Context, i int, sem chan struct{}) error {
	dir := s.dirs[i]
	start := time.Now()
	st, created, err := func() (*upperState, map[string]bool, error) {
		defer func() { <-sem }()
		if err := os.Chmod(dir, rootMode); err != nil {
			return nil, nil, err
		}
		rc, err := s.layers[i].Uncompressed(ctx)
		if err != nil {
			return nil, nil, err
		}
		defer rc.Close()
		st, created, err := applyUpper(ctx, dir, rc, s.o)
		if err != nil {
			return nil, nil, err
		}
		// Read to the end: the layer's digest is checked there, even if its tar ended early.
		if _, err := io.Copy(io.Discard, rc); err != nil {
			return nil, nil, err
		}
		return st, created, nil
	}()
	if err != nil {
		return err
	}
	s.o.logger.Debug("layer applied on its own", "layer", i+1, "took", time.Since(start).Round(time.Millisecond))
	lowers := make([]string, 0, i)
	for j := i - 1; j >= 0; j-- {
		if s.done[j] != nil {
			select {
			case <-s.done[j]:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			if err := ctx.Err(); err != nil {
				return context.Cause(ctx) // a lower layer failed
			}
		}
		lowers = append(lowers, s.dirs[j])
	}
	if err := finishUpper(dir, st, created, lowers, s.o); err != nil {
		return err
	}
	s.states[i] = st
	return nil
}

// flushInterval is how often flushWhile writes back what the builds wrote so far.
const flushInterval = 250 * time.Millisecond

// flushWhile starts writing back dirty data of dir's filesystem every flushInterval, until
// stop is called. Layers applied in parallel write hundreds of MB in a few seconds, less than
// the kernel's background writeback threshold (10% of memory), so without this all of it
// would be written at the final syncfs, after the builds; this overlaps the writeback with
// them and leaves the final syncfs little to do. It changes no guarantee: the final syncfs
// still runs before anything is published.
func flushWhile(dir string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(flushInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = syncFS(dir) // best effort: the final syncfs reports errors
			}
		}
	})
	return func() { close(done); wg.Wait() }
}
