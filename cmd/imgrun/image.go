package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgrun/imgrun/internal/progress"
	"github.com/imgrun/imgrun/pkg/layers"
	"github.com/imgrun/imgrun/pkg/registry"
)

// This file holds the steps several commands share: open the store and the registry
// client from the global flags, and get an image into the store according to a pull policy.

// Pull policies (--pull), as docker spells them.
const (
	pullMissing = "missing" // use the cached image without any network access; pull only if absent
	pullAlways  = "always"  // pull (cheap when nothing changed: one manifest HEAD)
	pullNever   = "never"   // use the cached image or fail
)

func parsePullPolicy(s string) (string, error) {
	switch s {
	case pullMissing, pullAlways, pullNever:
		return s, nil
	}
	return "", fmt.Errorf("invalid --pull %q (want missing, always or never)", s)
}

// openStore opens the cache. The store's warnings (a corrupt blob removed) reach the user
// as errors or as verify's report, so its log is shown with --debug only.
func (a *app) openStore() (*layers.Store, error) {
	return layers.Open(a.root, layers.WithLogger(a.dlog))
}

// client builds the registry client from --insecure and --mirror (or IMGRUN_MIRRORS).
// Its log (retries, mirror fallbacks) is shown with --debug only; failures are errors.
func (a *app) client() (*registry.Client, error) {
	opts := []registry.Option{
		registry.WithInsecure(a.insecure...),
		registry.WithMirrors(a.mirrors...),
		registry.WithLogger(a.dlog),
	}
	if a.stall > 0 {
		opts = append(opts, registry.WithStallTimeout(a.stall))
	}
	return registry.New(opts...)
}

// parsePlatform turns a --platform value into a platform. Empty gives the zero platform,
// which the library reads as "the host's, leniently": a single-platform image built for
// another architecture is still taken, as docker does; an explicit --platform is strict.
func parsePlatform(s string) (ocispec.Platform, error) {
	if s == "" {
		return ocispec.Platform{}, nil
	}
	return registry.ParsePlatform(s)
}

// pull fetches ref into st with the options o, showing progress on stderr.
func (a *app) pull(ctx context.Context, st *layers.Store, ref registry.Reference, o layers.PullOptions) (*layers.Image, error) {
	c, err := a.client()
	if err != nil {
		return nil, err
	}
	src, err := c.Open(ref)
	if err != nil {
		return nil, err
	}
	r := a.renderer()
	defer r.Close()
	name := ref.String()
	o.Progress = func(ev layers.Event) { r.Event(progressEvent(name, ev)) }
	return st.Pull(ctx, src, o)
}

// image returns ref's image from st, pulling it first as policy says. With pullMissing a
// cached image costs no network request at all.
func (a *app) image(ctx context.Context, st *layers.Store, ref registry.Reference, platform ocispec.Platform, policy string) (*layers.Image, error) {
	if policy != pullAlways {
		rec, err := st.Lookup(ctx, ref, platform)
		var img *layers.Image
		if err == nil {
			// Load fails with ErrNotCached too when a blob is gone (verify removed it).
			img, err = st.Load(ctx, rec)
		}
		if err == nil || !errors.Is(err, layers.ErrNotCached) {
			return img, err
		}
		if policy == pullNever {
			return nil, fmt.Errorf("%w (and --pull=never)", err)
		}
	}
	return a.pull(ctx, st, ref, layers.PullOptions{Platform: platform})
}

// progressEvent translates a store event for the renderer; the image-wide events become
// messages.
func progressEvent(ref string, ev layers.Event) progress.Event {
	e := progress.Event{Kind: progressKind(ev.Kind), ID: ev.Digest.String(), Ref: cmp.Or(ev.Ref, ref),
		Total: ev.Total, Done: ev.Done, Msg: ev.Msg, Err: ev.Err}
	if e.Kind != progress.Info {
		return e
	}
	e.ID = "" // the manifest digest of an image-wide event is not a transfer
	switch ev.Kind {
	case layers.EventResolved:
		e.Msg = cmp.Or(e.Msg, fmt.Sprintf("%s: manifest %s, layers %s", e.Ref, ev.Digest, progress.FormatBytes(ev.Total)))
	case layers.EventDone:
		e.Msg = cmp.Or(e.Msg, "pulled "+e.Ref)
	}
	return e
}

// progressKind maps the store's event kinds onto the renderer's.
func progressKind(k layers.EventKind) progress.Kind {
	switch k {
	case layers.EventResolve:
		return progress.Resolving
	case layers.EventLayerStart:
		return progress.Start
	case layers.EventLayerBytes:
		return progress.Update
	case layers.EventLayerCached:
		return progress.Cached
	case layers.EventLayerDone:
		return progress.Done
	case layers.EventRetry:
		return progress.Retry
	}
	return progress.Info
}
