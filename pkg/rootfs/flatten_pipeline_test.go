package rootfs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"
)

// countingLayer serves size pseudo-random bytes (seeded by seed) and counts what is read,
// opened and closed, so tests can check how far ahead the pipeline reads.
type countingLayer struct {
	seed, size int64
	err        error // returned instead of io.EOF
	opened     *atomic.Int64
	closed     *atomic.Int64
	read       atomic.Int64
}

func (c *countingLayer) Uncompressed(context.Context) (io.ReadCloser, error) {
	c.opened.Add(1)
	return &countingReader{c: c, r: io.LimitReader(rand.NewChaCha8(seedBytes(c.seed)), c.size)}, nil
}

type countingReader struct {
	c *countingLayer
	r io.Reader
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.c.read.Add(int64(n))
	if err == io.EOF && r.c.err != nil {
		err = r.c.err
	}
	return n, err
}

func (r *countingReader) Close() error { r.c.closed.Add(1); return nil }

func seedBytes(s int64) [32]byte {
	var b [32]byte
	b[0], b[1] = byte(s), byte(s>>8)
	return b
}

func expected(seed, size int64) []byte {
	b, _ := io.ReadAll(io.LimitReader(rand.NewChaCha8(seedBytes(seed)), size))
	return b
}

func newCounting(n int, size int64) ([]Layer, []*countingLayer, *atomic.Int64, *atomic.Int64) {
	var opened, closed atomic.Int64
	ls := make([]Layer, n)
	cs := make([]*countingLayer, n)
	for i := range n {
		cs[i] = &countingLayer{seed: int64(i), size: size, opened: &opened, closed: &closed}
		ls[i] = cs[i]
	}
	return ls, cs, &opened, &closed
}

// TestLayerQueueOrderAndContent reads every layer through the queue, in a given order.
func TestLayerQueueOrderAndContent(t *testing.T) {
	ls, _, opened, closed := newCounting(7, 3*pipelineChunkSize+123)
	order := []int{6, 5, 4, 3, 2, 1, 0}
	q := newLayerQueue(t.Context(), ls, order)
	for _, want := range order {
		s, idx, err := q.Next()
		if err != nil || idx != want {
			t.Fatalf("Next: %d %v, want layer %d", idx, err, want)
		}
		got, err := io.ReadAll(s)
		if err != nil {
			t.Fatalf("layer %d: %v", idx, err)
		}
		if !bytes.Equal(got, expected(int64(idx), 3*pipelineChunkSize+123)) {
			t.Fatalf("layer %d: content differs", idx)
		}
		s.release()
	}
	if _, _, err := q.Next(); err != io.EOF {
		t.Fatalf("Next after the last layer: %v, want io.EOF", err)
	}
	q.Close()
	if opened.Load() != 7 || closed.Load() != 7 {
		t.Errorf("opened %d, closed %d, want 7 and 7", opened.Load(), closed.Load())
	}
}

// TestLayerQueueBounded checks that while the consumer stalls on the first layer, at most
// pipelineAhead more layers are opened and each producer reads at most its buffer ahead.
func TestLayerQueueBounded(t *testing.T) {
	const size = 64 << 20
	ls, cs, opened, closed := newCounting(6, size)
	q := newLayerQueue(t.Context(), ls, []int{0, 1, 2, 3, 4, 5})
	s, _, _ := q.Next()
	if _, err := io.ReadFull(s, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	// Wait until the producers have filled their buffers (an eventual condition, no timing).
	bound := int64((pipelineChunks + 2) * pipelineChunkSize)
	deadline := time.Now().Add(time.Minute)
	for i := 0; i <= pipelineAhead; i++ {
		for cs[i].read.Load() < int64(pipelineChunks*pipelineChunkSize) {
			if time.Now().After(deadline) {
				t.Fatalf("layer %d: producer read only %d bytes", i, cs[i].read.Load())
			}
			time.Sleep(time.Millisecond)
		}
	}
	if n := opened.Load(); n != 1+pipelineAhead {
		t.Errorf("%d layers opened while the consumer holds the first, want %d", n, 1+pipelineAhead)
	}
	for i, c := range cs {
		if r := c.read.Load(); r > bound {
			t.Errorf("layer %d: read %d bytes ahead, more than the %d bound", i, r, bound)
		}
	}
	q.Close()
	if opened.Load() != closed.Load() {
		t.Errorf("opened %d layers but closed %d", opened.Load(), closed.Load())
	}
}

// TestLayerQueueErrors checks that a layer's error reaches the reader after its bytes, and
// that cancelling stops blocked producers.
func TestLayerQueueErrors(t *testing.T) {
	boom := errors.New("digest mismatch")
	ls, cs, _, _ := newCounting(2, 5000)
	cs[0].err = boom
	q := newLayerQueue(t.Context(), ls, []int{0, 1})
	s, _, _ := q.Next()
	got, err := io.ReadAll(s)
	if !errors.Is(err, boom) || len(got) != 5000 {
		t.Errorf("ReadAll: %d bytes, %v; want 5000 bytes, then %v", len(got), err, boom)
	}
	q.Close()

	ctx, cancel := context.WithCancel(t.Context())
	ls, _, opened, closed := newCounting(4, 64<<20)
	q = newLayerQueue(ctx, ls, []int{0, 1, 2, 3})
	s, _, _ = q.Next()
	cancel()
	if _, err := io.ReadAll(s); !errors.Is(err, context.Canceled) {
		t.Errorf("read after cancel: %v, want context.Canceled", err)
	}
	q.Close() // must return: every producer stops
	if opened.Load() != closed.Load() {
		t.Errorf("opened %d layers but closed %d", opened.Load(), closed.Load())
	}
}

// aheadReader is a layer stream that says it reads ahead by itself, as pkg/layers' streams do.
type aheadReader struct{ *countingReader }

func (aheadReader) ReadsAhead() bool { return true }

type aheadLayer struct{ *countingLayer }

func (a aheadLayer) Uncompressed(ctx context.Context) (io.ReadCloser, error) {
	rc, err := a.countingLayer.Uncompressed(ctx)
	return aheadReader{rc.(*countingReader)}, err
}

// TestLayerQueueDirect: a stream that reads ahead by itself is read directly, with no copy
// of its own (no bytes are read from it but what the consumer asks for), in order, and every
// opened stream is closed, also when the consumer stops early.
func TestLayerQueueDirect(t *testing.T) {
	ls, cs, opened, closed := newCounting(5, 3*pipelineChunkSize+7)
	for i := range ls {
		ls[i] = aheadLayer{cs[i]}
	}
	q := newLayerQueue(t.Context(), ls, []int{0, 1, 2, 3, 4})
	s, _, _ := q.Next()
	if _, err := io.ReadFull(s, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for opened.Load() < 1+pipelineAhead {
		if time.Now().After(deadline) {
			t.Fatalf("only %d layers opened", opened.Load())
		}
		time.Sleep(time.Millisecond)
	}
	for i, c := range cs {
		if want := map[bool]int64{true: 1000}[i == 0]; c.read.Load() != want {
			t.Errorf("layer %d: %d bytes read from the stream, want %d (no copy ahead)", i, c.read.Load(), want)
		}
	}
	rest, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(rest, expected(0, cs[0].size)[1000:]) {
		t.Fatalf("layer 0: %d bytes, %v", len(rest), err)
	}
	s.release()
	s, idx, _ := q.Next()
	got, err := io.ReadAll(s)
	if idx != 1 || err != nil || !bytes.Equal(got, expected(1, cs[1].size)) {
		t.Fatalf("layer %d: %d bytes, %v", idx, len(got), err)
	}
	s.release()
	q.Close() // layers 2 and 3 were opened ahead and never read; 4 maybe
	if opened.Load() != closed.Load() {
		t.Errorf("opened %d layers but closed %d", opened.Load(), closed.Load())
	}
}
