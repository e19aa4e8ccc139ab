package layers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// growth follows one blob's download into its partial file, for readers that unpack it while
// it lands (PullOptions.LayerStarted). Only downloads that start from the first byte in this
// process are followed: the bytes a reader sees are the ones the download writes and hashes,
// and the stream reports EOF only once the whole blob is verified and committed.
type growth struct {
	mu   sync.Mutex
	cond *sync.Cond
	path string // the partial file, until the commit renames it
	n    int64  // bytes written and hashed so far
	// restarted: the download went back to byte 0 (a server that ignored a Range): what
	// readers consumed may not be the blob; they fail with a retryable error.
	restarted bool
	done      bool
	err       error // the download's failure; nil once committed
}

func newGrowth(path string) *growth {
	g := &growth{path: path}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *growth) advance(n int64) {
	g.mu.Lock()
	g.n = n
	g.mu.Unlock()
	g.cond.Broadcast()
}

func (g *growth) restart() {
	g.mu.Lock()
	g.restarted = true
	g.mu.Unlock()
	g.cond.Broadcast()
}

func (g *growth) finish(err error) {
	g.mu.Lock()
	g.done, g.err = true, err
	g.mu.Unlock()
	g.cond.Broadcast()
}

// committed reports whether the blob is in the store (readers then open it there).
func (g *growth) committed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.done && g.err == nil
}

// wait blocks until the download ended; it returns its error.
func (g *growth) wait(ctx context.Context) error {
	stop := context.AfterFunc(ctx, g.cond.Broadcast)
	defer stop()
	g.mu.Lock()
	defer g.mu.Unlock()
	for !g.done && ctx.Err() == nil {
		g.cond.Wait()
	}
	if !g.done {
		return context.Cause(ctx)
	}
	return g.err
}

// ErrStreamRestarted reports a layer whose download had to start over from its first byte
// while it was being unpacked: what was unpacked may not be the blob. Its Retry method
// returns true: unpacking the layer again reads the verified blob.
var ErrStreamRestarted = errors.New("the download restarted from its first byte while the layer was being unpacked")

type restartError struct{}

func (restartError) Error() string { return ErrStreamRestarted.Error() }
func (restartError) Is(err error) bool {
	return err == ErrStreamRestarted
}
func (restartError) Retry() bool { return true }

// growingReader reads a partial file as its download writes it.
type growingReader struct {
	ctx  context.Context
	g    *growth
	f    *os.File
	pos  int64
	stop func() bool
}

// open returns a reader of the blob from its first byte, or ok false if the download already
// ended (committed or failed): the caller then opens the committed blob or reports the error.
func (g *growth) open(ctx context.Context) (r io.ReadCloser, ok bool, err error) {
	g.mu.Lock()
	ended, restarted := g.done, g.restarted
	g.mu.Unlock()
	if ended || restarted {
		return nil, false, nil
	}
	f, err := os.OpenFile(g.path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil // committed (renamed) meanwhile
	}
	if err != nil {
		return nil, false, err
	}
	gr := &growingReader{ctx: ctx, g: g, f: f}
	gr.stop = context.AfterFunc(ctx, g.cond.Broadcast)
	return gr, true, nil
}

func (r *growingReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	g := r.g
	g.mu.Lock()
	for r.pos >= g.n && !g.done && !g.restarted && r.ctx.Err() == nil {
		g.cond.Wait()
	}
	avail, done, err, restarted := g.n-r.pos, g.done, g.err, g.restarted
	g.mu.Unlock()
	switch {
	case restarted:
		return 0, restartError{}
	case r.ctx.Err() != nil:
		return 0, context.Cause(r.ctx)
	case avail <= 0 && done && err != nil:
		return 0, fmt.Errorf("download: %w", err)
	case avail <= 0 && done:
		return 0, io.EOF
	}
	n, rerr := unix.Pread(int(r.f.Fd()), p[:min(int64(len(p)), avail)], r.pos)
	if rerr != nil || n == 0 {
		g.mu.Lock()
		restarted := g.restarted // truncated under us
		g.mu.Unlock()
		if restarted {
			return 0, restartError{}
		}
		if rerr == nil {
			rerr = io.ErrUnexpectedEOF
		}
		return 0, fmt.Errorf("read %s: %w", g.path, rerr)
	}
	r.pos += int64(n)
	return n, nil
}

func (r *growingReader) Close() error {
	r.stop()
	return r.f.Close()
}

// explain returns, for an error met while decoding a followed download, the download's own
// error if it failed: bytes that do not match the digest usually break the decoder first,
// and "digest mismatch" is the true story. A restart is reported as is.
func (g *growth) explain(ctx context.Context, err error) error {
	if errors.Is(err, ErrStreamRestarted) || ctx.Err() != nil {
		return err
	}
	if derr := g.wait(ctx); derr != nil {
		return fmt.Errorf("download: %w", derr)
	}
	return err
}

// followedStream is the decoded stream of a followed download; its errors are explained.
type followedStream struct {
	io.ReadCloser
	ctx context.Context
	g   *growth
}

func (f *followedStream) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = f.g.explain(f.ctx, err)
	}
	return n, err
}
