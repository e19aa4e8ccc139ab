package layers

import (
	"context"
	"fmt"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/imgrun/imgrun/pkg/registry"
)

// DefaultJobs is how many layers Pull downloads at once unless told otherwise.
const DefaultJobs = 3

// PullOptions configure Pull.
type PullOptions struct {
	// Platform is the platform to pull. The zero value means the host's, leniently: an
	// index is matched against registry.HostPlatform(), and a single-platform image is
	// taken whatever its platform (as docker does). A platform given explicitly is strict.
	Platform ocispec.Platform
	Jobs     int          // concurrent layer downloads; <= 0 means DefaultJobs
	Progress ProgressFunc // may be nil
	// LayerReady, when set, is called once per layer as soon as it is verified in the
	// store (downloaded or already cached), with its position in the manifest. It runs
	// on the goroutine that fetched the layer, in any order, and must return quickly. An
	// unpacker uses it to start on the first layers while later ones still download;
	// the image is in index.json only when Pull returns.
	LayerReady func(i int, l Layer)
	// LayerStarted, when set, is called when layer i starts to download from its first
	// byte in this process, before any byte of it is written, on the goroutine that fetches
	// it; it must return quickly. l can be unpacked at once: its Uncompressed streams the
	// blob as it lands (Read waits for the next bytes), fails with the download's error if
	// the download fails, and reports io.EOF only once the blob is verified and committed,
	// so nothing built from it may be published earlier. Should the download have to start
	// over from byte 0, the stream fails with ErrStreamRestarted (retryable: Uncompressed
	// then reads the committed blob). LayerReady is still called after the commit.
	LayerStarted func(i int, l Layer)
	// Resolved, when set, is called once the manifest and config are resolved and stored,
	// before any layer is fetched and before any LayerReady call, on Pull's goroutine. It
	// tells an unpacker how many layers to expect (img.Layers()) and the image's key
	// (img.Record.Descriptor.Digest); the image is in index.json only when Pull returns.
	Resolved func(img *Image)
}

// Pull resolves src for a platform, stores its index, manifest and config, downloads and
// verifies every layer it does not hold yet (Jobs at a time) and records the image in
// index.json, replacing an older entry for the same reference and platform.
//
// Blobs already in the store are never requested again: Resolve is given the store's
// verified manifests and configs, so a tag whose digest is still current costs one
// manifest HEAD, and a cached digest reference costs no request at all.
func (s *Store) Pull(ctx context.Context, src registry.Source, o PullOptions) (*Image, error) {
	img, err := s.pull(ctx, src, o)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", src.Reference(), err)
	}
	return img, nil
}

func (s *Store) pull(ctx context.Context, src registry.Source, o PullOptions) (*Image, error) {
	platform := o.Platform
	jobs := o.Jobs
	if jobs <= 0 {
		jobs = DefaultJobs
	}
	ref := src.Reference().String()
	progress := o.Progress
	if progress != nil {
		progress = func(e Event) {
			e.Ref = ref
			o.Progress(e)
		}
	}

	// Shared gc.lock for the whole pull: GC must not collect blobs between their commit
	// and the index.json entry that references them.
	release, err := s.Hold(ctx)
	if err != nil {
		return nil, err
	}
	defer release()

	progress.emit(Event{Kind: EventResolve})
	ri, err := src.Resolve(ctx, platform, s.known(ctx))
	if err != nil {
		return nil, err
	}
	if err := checkImage(&ri.Manifest, &ri.Config); err != nil {
		return nil, err
	}
	if err := s.putResolved(ri); err != nil {
		return nil, err
	}
	rec := Record{Ref: ref, Platform: ri.Platform, Descriptor: ri.Descriptor}
	if rec.Platform.OS == "" {
		rec.Platform = platform
		if rec.Platform.OS == "" {
			rec.Platform = registry.HostPlatform()
		}
	}
	if ri.Index != nil {
		rec.Index = ri.Index.Digest
	}
	img := &Image{Record: rec, Manifest: ri.Manifest, Config: ri.Config, ConfigBytes: ri.ConfigBytes, store: s}
	progress.emit(Event{Kind: EventResolved, Digest: ri.Descriptor.Digest, Total: img.Size()})
	if o.Resolved != nil {
		o.Resolved(img)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	layers := img.Layers()
	for i, l := range layers {
		g.Go(func() error {
			var started func(*growth)
			if o.LayerStarted != nil {
				started = func(g *growth) {
					sl := l
					sl.grow = g
					o.LayerStarted(i, sl)
				}
			}
			if err := s.ensureFollowed(gctx, l.Descriptor, src, progress, started); err != nil {
				return fmt.Errorf("blob %s: %w", l.Descriptor.Digest, err)
			}
			if o.LayerReady != nil {
				o.LayerReady(i, l)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	if err := s.putRecord(ctx, rec); err != nil {
		return nil, fmt.Errorf("update index.json: %w", err)
	}
	progress.emit(Event{Kind: EventDone, Digest: ri.Descriptor.Digest, Total: img.Size(), Done: img.Size()})
	return img, nil
}

// known serves Resolve the manifests, indexes and configs the store already holds,
// verified against their digests.
func (s *Store) known(ctx context.Context) registry.KnownFunc {
	return func(d digest.Digest) ([]byte, bool) {
		data, err := s.ReadBlob(ctx, d, registry.MaxManifestSize)
		if err != nil {
			return nil, false
		}
		return data, true
	}
}

// putResolved commits the small blobs Resolve returned (each re-verified by putBlob).
func (s *Store) putResolved(ri *registry.Image) error {
	if ri.Index != nil && ri.IndexBytes != nil {
		if err := s.putBlob(ri.Index.Digest, ri.IndexBytes); err != nil {
			return fmt.Errorf("index %s: %w", ri.Index.Digest, err)
		}
	}
	if err := s.putBlob(ri.Descriptor.Digest, ri.ManifestBytes); err != nil {
		return fmt.Errorf("manifest %s: %w", ri.Descriptor.Digest, err)
	}
	if err := s.putBlob(ri.Manifest.Config.Digest, ri.ConfigBytes); err != nil {
		return fmt.Errorf("config %s: %w", ri.Manifest.Config.Digest, err)
	}
	return nil
}
