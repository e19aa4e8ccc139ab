package rootfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Export reads the layers top first, but an image's big layers are usually its lowest ones:
// with the flatten pipeline's bounded read-ahead they were decompressed one after the other,
// each only once the writer got to it, on one core. Export's own queue (spoolQueue) opens up
// to exportOpenLayers layers at a time in the writer's order, like that pipeline, but decodes
// each to its end as fast as it can, exportDecoders (one per core) at once, those the writer
// needs first first (decodeSched). The writer's current layer comes through a few in-memory
// chunks and its decoder waits for the writer. A layer the writer does not read yet goes to
// its spill file: an unnamed temporary file (O_TMPFILE) beside ExportFile's output (in
// os.TempDir for Export; never on tmpfs), which the writer reads back in order and
// hole-punches as it goes; a layer decoded to its end holds no memory, so the next layer
// opens. Memory stays what it was (open layers times their decoder state and a few chunks);
// disk use is bounded by the spill budget. Where no spill file can be made, or the budget is
// spent, a decoder keeps its chunks in memory and waits for the writer, as before: spilling
// changes when bytes are decoded, never what the writer reads, so the output is the same
// byte for byte.
const (
	exportSpoolChunk  = 256 << 10 // bytes per chunk
	exportSpoolChunks = 2         // in-memory chunks of the writer's layer (or of one that cannot spill)
	maxSpillBudget    = 16 << 30  // spill at most this much in one export
	spillPunchBatch   = 8 << 20   // read-back bytes freed per hole-punch call
)

// chunkFree recycles one export's chunks; it holds at most as many as can be in use at once,
// exportOpenLayers*(exportSpoolChunks+1)+1, so it never drops one in a steady state.
type chunkFree chan *[]byte

func newChunkFree() chunkFree { return make(chunkFree, exportOpenLayers*(exportSpoolChunks+1)+1) }

func (c chunkFree) get() *[]byte {
	select {
	case b := <-c:
		return b
	default:
		b := make([]byte, exportSpoolChunk)
		return &b
	}
}

func (c chunkFree) put(b *[]byte) {
	*b = (*b)[:cap(*b)]
	select {
	case c <- b:
	default:
	}
}

// exportOpenLayers is how many layers Export keeps open at once: as many as the flatten
// pipeline did for it (1+pipelineAhead), so that memory (each open layer's decoder window
// and read-ahead) stays the same.
// Of those, exportDecoders decode at once (see decodeSched): one per core, since decoding is
// CPU-bound.
const exportOpenLayers = 3

func exportDecoders() int {
	return min(runtime.GOMAXPROCS(0), exportOpenLayers)
}

// spiller makes the spill files of one export and accounts for their bytes: budget is what
// may still be spilled; bytes read back and freed return to it.
type spiller struct {
	dir       string // "" disables spilling
	prefix    string // name prefix of a named fallback file (removed right after it is made)
	noTmpfile bool   // tests: make the fallback file
	budget    atomic.Int64
	files     atomic.Int64 // spill files open
}

// newSpiller spills into dir, at most half of its filesystem's free space and maxSpillBudget,
// or nowhere if dir is in memory (tmpfs, ramfs): that would only be unaccounted memory.
func newSpiller(dir, prefix string) *spiller {
	sp := &spiller{dir: dir, prefix: prefix}
	var st unix.Statfs_t
	if dir == "" || unix.Statfs(dir, &st) != nil || st.Type == unix.TMPFS_MAGIC || st.Type == unix.RAMFS_MAGIC {
		sp.dir = ""
		return sp
	}
	sp.budget.Store(min(int64(st.Bavail)*st.Bsize/2, maxSpillBudget))
	return sp
}

// take reserves n bytes of the budget.
func (sp *spiller) take(n int64) bool {
	if sp.budget.Add(-n) >= 0 {
		return true
	}
	sp.budget.Add(n)
	return false
}

// create makes an unnamed spill file, or a named one removed at once where O_TMPFILE is not
// supported. Nobody else can open it, and it disappears when closed or when the process dies.
func (sp *spiller) create() (*os.File, error) {
	if sp.dir == "" {
		return nil, errors.New("spilling disabled")
	}
	if !sp.noTmpfile {
		fd, err := unix.Open(sp.dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
		if err == nil {
			sp.files.Add(1)
			return os.NewFile(uintptr(fd), filepath.Join(sp.dir, "(spill)")), nil
		}
	}
	f, err := os.CreateTemp(sp.dir, sp.prefix+"*")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	sp.files.Add(1)
	return f, nil
}

func (sp *spiller) close(f *os.File) {
	f.Close()
	sp.files.Add(-1)
}

var errSpoolClosed = errors.New("layer stream closed by the writer")

// spoolQueue hands out the layers' uncompressed streams in a fixed order, decoding layers
// ahead of the consumer as described above. Close must be called to stop and wait for every
// decoder.
type spoolQueue struct {
	ctx    context.Context
	cancel context.CancelFunc
	layers []Layer
	order  []int // indexes into layers, in consumption order
	spools []*spool
	sched  *decodeSched
	free   chunkFree
	next   int // position in order of the next spool Next returns
	wg     sync.WaitGroup
}

// newSpoolQueue opens the layers in order, exportOpenLayers at a time, and decodes them,
// decoders at a time, spilling with sp.
func newSpoolQueue(ctx context.Context, layers []Layer, order []int, decoders int, sp *spiller) *spoolQueue {
	ctx, cancel := context.WithCancel(ctx)
	q := &spoolQueue{ctx: ctx, cancel: cancel, layers: layers, order: order,
		spools: make([]*spool, len(order)), sched: newDecodeSched(decoders), free: newChunkFree()}
	for i := range q.spools {
		q.spools[i] = &spool{ctx: ctx, sp: sp, sched: q.sched, free: q.free, pos: i,
			produced: make(chan struct{}, 1), consumed: make(chan struct{}, 1), stop: make(chan struct{})}
	}
	q.wg.Add(1)
	go q.dispatch()
	return q
}

// dispatch starts one decoder per layer in consumption order, for at most exportOpenLayers
// layers at a time that are being decoded or hold chunks in memory.
func (q *spoolQueue) dispatch() {
	defer q.wg.Done()
	slots := make(chan struct{}, exportOpenLayers)
	for i, s := range q.spools {
		select {
		case slots <- struct{}{}:
		case <-q.ctx.Done():
			for _, s := range q.spools[i:] {
				s.end(q.ctx.Err())
			}
			return
		}
		s.mu.Lock()
		s.freeSlot = sync.OnceFunc(func() { <-slots })
		s.mu.Unlock()
		q.wg.Add(1)
		go func() {
			defer q.wg.Done()
			s.end(s.produce(q.layers[q.order[i]]))
		}()
	}
}

// Next returns the stream of the next layer in order and its index in layers. The stream
// returns the layer's error (an open error, a digest mismatch at EOF) after its last byte.
func (q *spoolQueue) Next() (*spool, int, error) {
	if q.next >= len(q.order) {
		return nil, 0, io.EOF
	}
	pos := q.next
	q.next++
	s := q.spools[pos]
	s.activate()
	return s, q.order[pos], nil
}

// Close stops every decoder and waits for them, so that no layer or spill file stays open
// after it returns.
func (q *spoolQueue) Close() {
	q.cancel()
	for _, s := range q.spools {
		s.release()
	}
	q.wg.Wait()
}

// segment is a run of a layer's bytes: an in-memory chunk, or n bytes of the spill file at off.
type segment struct {
	buf *[]byte
	off int64
	n   int64
}

// spool is one layer's stream between its decoder (produce) and the writer (Read). Bytes
// queue up in order as segments: until the writer starts on the layer, runs of the spill
// file; then (or if spilling fails) in-memory chunks, at most exportSpoolChunks of them.
type spool struct {
	ctx      context.Context
	sp       *spiller
	sched    *decodeSched
	free     chunkFree
	pos      int    // position in consumption order
	freeSlot func() // gives the layer's open slot back (once); nil until it has one; under mu

	holding bool // the decoder holds a decodeSched slot; used by the decoder only

	mu       sync.Mutex
	segs     []segment
	inMem    int   // in-memory chunks in segs
	active   bool  // the writer reads this layer: stop spilling, wait for it instead
	done     bool  // the decoder ended; err is its verdict
	err      error // nil: the layer was read to its end and verified
	released bool  // the writer is done with the layer
	file     *os.File
	woff     int64 // end of the spill file's written bytes
	noSpill  bool  // spilling failed or is over budget: wait for the writer
	produced chan struct{}
	consumed chan struct{}
	stop     chan struct{} // closed by release

	// The writer's side, used by Read only.
	cur      []byte  // unread bytes of the current chunk
	curBuf   *[]byte // the pooled buffer cur is in
	fileSeg  segment // unread part of a spilled run
	punchOff int64   // spill bytes before this offset were freed
}

func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// activate marks the layer as the one the writer reads.
func (s *spool) activate() {
	s.mu.Lock()
	s.active = true
	s.mu.Unlock()
}

// produce decodes layer l to its end into the spool.
func (s *spool) produce(l Layer) (err error) {
	rc, err := l.Uncompressed(s.ctx)
	if err != nil {
		return fmt.Errorf("open layer: %w", err)
	}
	defer func() {
		if cerr := rc.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close layer: %w", cerr)
		}
	}()
	if err := s.resume(); err != nil {
		return err
	}
	defer s.pause()
	for {
		bp := s.free.get()
		n, rerr := fillChunk(rc, *bp)
		if n > 0 {
			if err := s.put(bp, n); err != nil {
				return err
			}
		} else {
			s.free.put(bp)
		}
		if s.holding {
			s.holding = false
			if err := s.sched.yield(s.ctx, s.stop, s.pos); err != nil {
				return err
			}
			s.holding = true
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

// put queues the first n bytes of the chunk bp: in the spill file if the writer is not
// reading this layer yet, else in memory, once the writer made room.
func (s *spool) put(bp *[]byte, n int) error {
	for {
		s.mu.Lock()
		switch {
		case s.released:
			s.mu.Unlock()
			s.free.put(bp)
			return errSpoolClosed
		case !s.active && !s.noSpill:
			// Spilled rather than kept, so that a layer decoded to its end holds no memory
			// while it waits for the writer, however many layers do.
			s.mu.Unlock()
			if s.spill((*bp)[:n]) {
				s.free.put(bp)
				return nil
			}
			continue
		case s.inMem < exportSpoolChunks:
			*bp = (*bp)[:n]
			s.segs = append(s.segs, segment{buf: bp, n: int64(n)})
			s.inMem++
			s.mu.Unlock()
			kick(s.produced)
			return nil
		}
		active := s.active
		s.mu.Unlock()
		if !active {
			// Until the writer gets to this layer, let the layers it needs first decode.
			// The writer's own layer keeps its slot: the writer is about to make room.
			s.pause()
		}
		select {
		case <-s.consumed:
		case <-s.stop:
		case <-s.ctx.Done():
			s.free.put(bp)
			return s.ctx.Err()
		}
		if err := s.resume(); err != nil {
			s.free.put(bp)
			return err
		}
	}
}

// resume waits for a decoding slot, pause gives it up; both are for the decoder only.
func (s *spool) resume() error {
	if s.holding {
		return nil
	}
	if err := s.sched.acquire(s.ctx, s.stop, s.pos); err != nil {
		return err
	}
	s.holding = true
	return nil
}

func (s *spool) pause() {
	if s.holding {
		s.holding = false
		s.sched.release()
	}
}

// spill appends b to the spill file and queues it. It reports false, and turns spilling off
// for this layer, when the file cannot be made or written or the budget is spent. The file
// is written outside the lock: only the decoder writes it, and nobody closes it before the
// decoder ended.
func (s *spool) spill(b []byte) bool {
	if s.file == nil {
		f, err := s.sp.create()
		if err != nil {
			s.setNoSpill()
			return false
		}
		s.mu.Lock()
		s.file = f
		s.mu.Unlock()
	}
	if !s.sp.take(int64(len(b))) {
		s.setNoSpill()
		return false
	}
	if _, err := s.file.WriteAt(b, s.woff); err != nil {
		s.setNoSpill()
		return false
	}
	s.mu.Lock()
	if k := len(s.segs) - 1; k >= 0 && s.segs[k].buf == nil && s.segs[k].off+s.segs[k].n == s.woff {
		s.segs[k].n += int64(len(b)) // extend the run
	} else {
		s.segs = append(s.segs, segment{off: s.woff, n: int64(len(b))})
	}
	s.woff += int64(len(b))
	s.mu.Unlock()
	kick(s.produced)
	return true
}

func (s *spool) setNoSpill() {
	s.mu.Lock()
	s.noSpill = true
	s.mu.Unlock()
}

// end records the decoder's verdict; the writer gets it after the last queued byte.
func (s *spool) end(err error) {
	s.mu.Lock()
	s.done, s.err = true, err
	s.closeFileIfIdle()
	s.freeSlotIfIdle()
	s.mu.Unlock()
	kick(s.produced)
}

// freeSlotIfIdle lets another layer open once this one is decoded and holds no memory.
// s.mu must be held.
func (s *spool) freeSlotIfIdle() {
	if s.done && s.inMem == 0 && s.freeSlot != nil {
		s.freeSlot()
	}
}

// closeFileIfIdle closes the spill file once both the decoder and the writer are done with it.
// s.mu must be held.
func (s *spool) closeFileIfIdle() {
	if s.done && s.released && s.file != nil {
		s.sp.close(s.file)
		s.file = nil
	}
}

// Read implements io.Reader: the layer's bytes in order, then io.EOF if the layer was read to
// its end and verified, or the layer's error.
func (s *spool) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for len(s.cur) == 0 {
		if s.fileSeg.n > 0 {
			if err := s.readBack(); err != nil {
				return 0, err
			}
			continue
		}
		if err := s.nextSegment(); err != nil {
			return 0, err
		}
	}
	n := copy(p, s.cur)
	s.cur = s.cur[n:]
	return n, nil
}

// nextSegment waits for the next segment and makes it current.
func (s *spool) nextSegment() error {
	s.putCur()
	for {
		s.mu.Lock()
		if len(s.segs) > 0 {
			seg := s.segs[0]
			s.segs[0] = segment{}
			s.segs = s.segs[1:]
			if seg.buf != nil {
				s.inMem--
				s.freeSlotIfIdle()
				s.curBuf, s.cur = seg.buf, *seg.buf
			} else {
				s.fileSeg = seg
			}
			s.mu.Unlock()
			if seg.buf != nil {
				kick(s.consumed)
			}
			return nil
		}
		if s.done {
			err := s.err
			s.mu.Unlock()
			if err == nil {
				return io.EOF
			}
			return err
		}
		s.mu.Unlock()
		select {
		case <-s.produced:
		case <-s.ctx.Done():
			return s.ctx.Err()
		}
	}
}

// readBack reads the next chunk of the current spilled run, and frees what was read.
func (s *spool) readBack() error {
	if err := s.ctx.Err(); err != nil {
		return err
	}
	if s.curBuf == nil {
		s.curBuf = s.free.get()
	}
	b := (*s.curBuf)[:min(int64(cap(*s.curBuf)), s.fileSeg.n)]
	if _, err := s.file.ReadAt(b, s.fileSeg.off); err != nil {
		return fmt.Errorf("read spill file: %w", err)
	}
	s.fileSeg.off += int64(len(b))
	s.fileSeg.n -= int64(len(b))
	s.cur = b
	if end := s.fileSeg.off; end-s.punchOff >= spillPunchBatch {
		// Freed blocks need no writeback and go back to the budget, which so bounds the
		// bytes spilled but not read yet.
		if unix.Fallocate(int(s.file.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, s.punchOff, end-s.punchOff) == nil {
			s.sp.budget.Add(end - s.punchOff)
		}
		s.punchOff = end
	}
	return nil
}

func (s *spool) putCur() {
	if s.curBuf != nil {
		s.free.put(s.curBuf)
		s.curBuf, s.cur = nil, nil
	}
}

// finish drains what is left of the stream (the tar's end padding, trailing bytes) so that
// the layer's digest is checked, and returns the layer's error.
func (s *spool) finish() error {
	_, err := io.Copy(io.Discard, s)
	return err
}

// release stops the decoder if it is still running and frees the layer's buffers and spill
// file; it is safe to call more than once. Only the writer's goroutine calls it.
func (s *spool) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.released {
		return
	}
	s.released = true
	close(s.stop)
	for _, seg := range s.segs {
		if seg.buf != nil {
			s.free.put(seg.buf)
		}
	}
	s.segs, s.inMem = nil, 0
	s.putCur()
	s.closeFileIfIdle()
	s.freeSlotIfIdle()
}
