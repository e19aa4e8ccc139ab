package rootfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// The layer pipeline overlaps decompression (CPU-bound) with extraction or export (syscall- or
// write-bound). Each layer gets one producer goroutine that opens the layer (pkg/layers
// decompresses it and hashes the uncompressed bytes once, for the diffID check at EOF), reads
// it into fixed-size chunks and hands them to the consumer through a bounded channel. The
// consumer takes the layers strictly in order (Flatten in order: lowest first), so
// whiteouts, opaque markers and replacements see exactly the layers they must, whatever the
// producers' timing: only decoding runs ahead, never applying. Producers of the next
// pipelineAhead layers run while the current one is consumed, so on two cores one core
// decompresses while the other applies, and small layers are already decoded when their turn
// comes. Memory is bounded by about (1+pipelineAhead) * (pipelineChunks+2) *
// pipelineChunkSize plus each decompressor's state, whatever the layer sizes. Nothing is
// fsynced per file: Flatten calls syncfs(2) once before it publishes a tree by rename.
//
// A layer stream that already decodes in its own goroutine with a bounded read-ahead (pkg/layers'
// streams say so with a ReadsAhead method) is handed to the consumer as it is: its producer
// stands down after opening it, so the bytes are not copied once more between two goroutines.
// Opening still happens ahead, in the producer, so a layer that is still downloading (see
// [Pending]) blocks only its producer.
const (
	pipelineAhead     = 2         // layers decoded ahead of the one being consumed
	pipelineChunkSize = 256 << 10 // bytes per chunk
	pipelineChunks    = 8         // chunks buffered per layer (2 MiB)
)

var chunkPool = sync.Pool{New: func() any { b := make([]byte, pipelineChunkSize); return &b }}

// layerQueue hands out the layers' uncompressed streams in a fixed order, decoding up to
// pipelineAhead layers ahead of the consumer.
type layerQueue struct {
	ctx     context.Context
	cancel  context.CancelFunc
	layers  []Layer
	order   []int // indexes into layers, in consumption order
	streams []*layerStream
	next    int // position in order of the next stream Next returns
	wg      sync.WaitGroup
}

// newLayerQueue starts decoding the first layers of order. Close must be called to stop and
// wait for every producer.
func newLayerQueue(ctx context.Context, layers []Layer, order []int) *layerQueue {
	ctx, cancel := context.WithCancel(ctx)
	q := &layerQueue{ctx: ctx, cancel: cancel, layers: layers, order: order,
		streams: make([]*layerStream, len(order))}
	q.startUpTo(pipelineAhead)
	return q
}

// startUpTo starts the producers of the positions up to and including pos.
func (q *layerQueue) startUpTo(pos int) {
	for i := range q.streams {
		if i > pos {
			break
		}
		if q.streams[i] == nil {
			q.streams[i] = q.start(q.order[i])
		}
	}
}

// Next returns the stream of the next layer in order and its index in layers. The stream
// returns the layer's error (an open error, a digest mismatch at EOF) after its last byte.
func (q *layerQueue) Next() (*layerStream, int, error) {
	if q.next >= len(q.order) {
		return nil, 0, io.EOF
	}
	pos := q.next
	q.next++
	q.startUpTo(pos + pipelineAhead)
	return q.streams[pos], q.order[pos], nil
}

// Close stops every producer and waits for them, so that no layer stays open after it returns.
func (q *layerQueue) Close() {
	q.cancel()
	q.wg.Wait()
	for _, s := range q.streams {
		if s != nil {
			s.release()
		}
	}
}

func (q *layerQueue) start(idx int) *layerStream {
	s := &layerStream{ctx: q.ctx, chunks: make(chan *[]byte, pipelineChunks), done: make(chan struct{})}
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		s.err = s.produce(q.ctx, q.layers[idx])
		close(s.chunks)
	}()
	return s
}

// layerStream is the consumer side of one layer's producer. Reads return io.EOF only when the
// producer read the layer to its end without error.
type layerStream struct {
	ctx    context.Context
	chunks chan *[]byte
	err    error // set by the producer before chunks is closed
	cur    *[]byte
	off    int
	once   sync.Once
	done   chan struct{} // closed by the consumer to stop the producer early

	mu       sync.Mutex
	direct   io.ReadCloser // the layer's own stream, read directly (see readAheader)
	released bool
}

// handOver gives the consumer the layer's own stream, unless the stream was released already.
// The producer closes chunks right after, which publishes direct to Read.
func (s *layerStream) handOver(rc io.ReadCloser) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.released {
		return false
	}
	s.direct = rc
	return true
}

// readAheader is implemented by layer streams that decode in their own goroutine, a bounded
// number of bytes ahead of their reader: the pipeline reads those directly.
type readAheader interface{ ReadsAhead() bool }

func (s *layerStream) produce(ctx context.Context, l Layer) (err error) {
	rc, err := l.Uncompressed(ctx)
	if err != nil {
		return fmt.Errorf("open layer: %w", err)
	}
	if ra, ok := rc.(readAheader); ok && ra.ReadsAhead() {
		if s.handOver(rc) {
			return nil // the consumer reads rc and closes it in release
		}
		rc.Close() // released before it was opened: nobody will read it
		return errStreamClosed
	}
	defer func() {
		if cerr := rc.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close layer: %w", cerr)
		}
	}()
	for {
		bp := chunkPool.Get().(*[]byte)
		n, rerr := fillChunk(rc, *bp)
		if n > 0 {
			b := (*bp)[:n]
			select {
			case s.chunks <- &b:
			case <-s.done:
				chunkPool.Put(bp)
				return errStreamClosed
			case <-ctx.Done():
				chunkPool.Put(bp)
				return ctx.Err()
			}
		} else {
			chunkPool.Put(bp)
		}
		switch {
		case rerr == nil:
		case rerr == io.EOF:
			return nil
		default:
			return fmt.Errorf("read layer: %w", rerr)
		}
	}
}

var errStreamClosed = errors.New("layer stream closed by its reader")

// Read implements io.Reader.
func (s *layerStream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if s.cur == nil || s.off == len(*s.cur) {
		if s.cur != nil {
			s.putCur()
		}
		select {
		case b, ok := <-s.chunks:
			if !ok {
				if s.direct != nil {
					return s.readDirect(p)
				}
				if s.err != nil {
					return 0, s.err
				}
				return 0, io.EOF
			}
			s.cur, s.off = b, 0
		case <-s.ctx.Done():
			return 0, s.ctx.Err()
		}
	}
	n := copy(p, (*s.cur)[s.off:])
	s.off += n
	return n, nil
}

// readDirect reads the layer's own stream once the producer handed it over; its errors
// (truncation, a digest mismatch at EOF) are the layer's.
func (s *layerStream) readDirect(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := s.direct.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("read layer: %w", err)
	}
	return n, err
}

func (s *layerStream) putCur() {
	b := (*s.cur)[:cap(*s.cur)]
	chunkPool.Put(&b)
	s.cur = nil
}

// finish drains what is left of the stream (the tar's end padding, trailing bytes) so that
// the layer's digest is checked, and returns the layer's error.
func (s *layerStream) finish() error {
	_, err := io.Copy(io.Discard, s)
	return err
}

// release stops the producer if it is still running; it is safe to call more than once.
func (s *layerStream) release() {
	s.once.Do(func() { close(s.done) })
	if s.cur != nil {
		s.putCur()
	}
	s.mu.Lock()
	rc := s.direct
	s.direct, s.released = nil, true
	s.mu.Unlock()
	if rc != nil {
		// The stream's own verdict no longer matters: a stream read to its end reported
		// it through Read, and one abandoned early is an error the consumer already has.
		_ = rc.Close()
	}
}

// fillChunk reads into buf until it is full or r fails (io.EOF included): the layer reader may
// return a few bytes per Read, and chunks are handed over whole.
func fillChunk(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
