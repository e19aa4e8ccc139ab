package rootfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// ErrPullFailed is what the layers of a [Pending] return once [Pending.Fail] was called
// without a cause.
var ErrPullFailed = errors.New("layers not available")

// Pending lets a build ([Flatten], [Cache.Ensure], [Export]) start while the image's layers
// are still being downloaded: its [Pending.Layers] are placeholders whose Uncompressed waits
// until the downloader hands over the real layer with [Pending.Ready] (pkg/layers calls
// PullOptions.LayerReady once a blob is verified in the store) or gives up with
// [Pending.Fail]. The build's pipeline opens layers ahead of the one it applies, so layer 0
// is being extracted while later layers download; layers are still applied in order.
//
// Nothing unverified is published: a layer is Ready only after its blob's digest was checked,
// and the build checks every diffID before it renames its tree into place.
type Pending struct {
	mu      sync.Mutex
	layers  []Layer
	ready   []chan struct{}
	failed  chan struct{}
	failErr error
}

// NewPending returns a Pending for an image of n layers, none of them ready.
func NewPending(n int) *Pending {
	p := &Pending{layers: make([]Layer, n), ready: make([]chan struct{}, n), failed: make(chan struct{})}
	for i := range p.ready {
		p.ready[i] = make(chan struct{})
	}
	return p
}

// Ready hands over layer i (bottom first). Calls beyond the first for one index, or for an
// index out of range, are ignored. It never blocks: it may be called from a download
// goroutine.
func (p *Pending) Ready(i int, l Layer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i < 0 || i >= len(p.layers) || p.layers[i] != nil {
		return
	}
	p.layers[i] = l
	close(p.ready[i])
}

// Fail wakes every build still waiting for a layer that is not ready; their Uncompressed
// returns err (or [ErrPullFailed] if err is nil). Layers already ready are not affected.
// Calls after the first are ignored.
func (p *Pending) Fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.failed:
		return
	default:
	}
	if err == nil {
		err = ErrPullFailed
	}
	p.failErr = err
	close(p.failed)
}

// Layers returns the n placeholders, in the image's order.
func (p *Pending) Layers() []Layer {
	out := make([]Layer, len(p.layers))
	for i := range out {
		out[i] = pendingLayer{p: p, i: i}
	}
	return out
}

// wait returns layer i once it is ready.
func (p *Pending) wait(ctx context.Context, i int) (Layer, error) {
	select {
	case <-p.ready[i]:
	case <-p.failed:
		select {
		case <-p.ready[i]: // ready before the failure: still usable
		default:
			p.mu.Lock()
			defer p.mu.Unlock()
			return nil, fmt.Errorf("layer %d: %w", i+1, p.failErr)
		}
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.layers[i], nil
}

type pendingLayer struct {
	p *Pending
	i int
}

// Uncompressed waits for the layer to be ready, then opens it.
func (l pendingLayer) Uncompressed(ctx context.Context) (io.ReadCloser, error) {
	layer, err := l.p.wait(ctx, l.i)
	if err != nil {
		return nil, err
	}
	return layer.Uncompressed(ctx)
}
