package rootfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imgrun/imgrun/internal/tartest"
)

// openStreams counts the layer streams open now (countingLayer, flatten_pipeline_test.go).
type openStreams struct{ opened, closed *atomic.Int64 }

func (o openStreams) Load() int64 { return o.opened.Load() - o.closed.Load() }

func newSpoolLayers(sizes ...int64) ([]Layer, []*countingLayer, openStreams) {
	var opened, closed atomic.Int64
	ls := make([]Layer, len(sizes))
	cs := make([]*countingLayer, len(sizes))
	for i, size := range sizes {
		cs[i] = &countingLayer{seed: int64(i), size: size, opened: &opened, closed: &closed}
		ls[i] = cs[i]
	}
	return ls, cs, openStreams{&opened, &closed}
}

// testSpiller spills into dir, whatever its filesystem (newSpiller refuses tmpfs, where a test's
// temporary directory may be).
func testSpiller(t *testing.T, dir string) *spiller {
	sp := &spiller{dir: dir, prefix: "spill-"}
	sp.budget.Store(1 << 30)
	return sp
}

// TestSpillerNotInMemory: nothing spills to a filesystem in memory.
func TestSpillerNotInMemory(t *testing.T) {
	var st unix.Statfs_t
	if unix.Statfs("/dev/shm", &st) != nil || st.Type != unix.TMPFS_MAGIC {
		t.Skip("no tmpfs at /dev/shm")
	}
	if sp := newSpiller("/dev/shm", "spill-"); sp.dir != "" {
		t.Errorf("newSpiller spills into tmpfs")
	}
	if _, err := newSpiller("/dev/shm", "spill-").create(); err == nil {
		t.Errorf("a spill file was made in tmpfs")
	}
}

// waitFor polls cond, an eventual condition, for up to a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// readAllLayers reads every layer of q in order and checks its content.
func readAllLayers(t *testing.T, q *spoolQueue, cs []*countingLayer, order []int) {
	t.Helper()
	for _, want := range order {
		s, idx, err := q.Next()
		if err != nil || idx != want {
			t.Fatalf("Next: %d %v, want layer %d", idx, err, want)
		}
		got, err := io.ReadAll(s)
		if err != nil {
			t.Fatalf("layer %d: %v", idx, err)
		}
		if !bytes.Equal(got, expected(int64(idx), cs[idx].size)) {
			t.Fatalf("layer %d: content differs (%d bytes, want %d)", idx, len(got), cs[idx].size)
		}
		s.release()
	}
	if _, _, err := q.Next(); err != io.EOF {
		t.Fatalf("Next after the last layer: %v, want io.EOF", err)
	}
}

// TestSpoolQueueSpills checks that while the writer holds the first layer, the layers below
// it are decoded to their end (spilled), exportOpenLayers at a time, and that every layer
// then reads back complete and in order; nothing stays open.
func TestSpoolQueueSpills(t *testing.T) {
	const size = 3*exportSpoolChunk + 123
	ls, cs, open := newSpoolLayers(5, size, size, size, 10, 2*size, 0)
	order := []int{6, 5, 4, 3, 2, 1, 0}
	sp := testSpiller(t, t.TempDir())
	q := newSpoolQueue(t.Context(), ls, order, 2, sp)
	defer q.Close()
	s, idx, _ := q.Next()
	if idx != 6 {
		t.Fatalf("first layer %d, want 6", idx)
	}
	// The writer has not read layer 6 (empty) to its end: every other layer is still
	// decoded, to its end.
	for i := range 6 {
		waitFor(t, fmt.Sprintf("layer %d decoded", i), func() bool { return cs[i].read.Load() == cs[i].size })
	}
	if got, err := io.ReadAll(s); err != nil || len(got) != 0 {
		t.Fatalf("layer 6: %d bytes, %v", len(got), err)
	}
	s.release()
	readAllLayers(t, q, cs, order[1:])
	q.Close()
	if n := open.Load(); n != 0 {
		t.Errorf("%d layer streams left open", n)
	}
	if n := sp.files.Load(); n != 0 {
		t.Errorf("%d spill files left open", n)
	}
}

// TestSpoolQueueBounded checks the bounds when nothing can spill: no spill directory, or a
// spent budget. Then a layer the writer does not read decodes only its in-memory chunks
// ahead (and what a spent budget let through), and only exportOpenLayers layers are open.
func TestSpoolQueueBounded(t *testing.T) {
	const size = 64 << 20
	for _, tc := range []struct {
		name   string
		sp     *spiller
		budget int64
	}{
		{"no dir", newSpiller("", ""), 0},
		{"budget", testSpiller(t, t.TempDir()), 3 * exportSpoolChunk},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.sp.dir != "" {
				tc.sp.budget.Store(tc.budget)
			}
			ls, cs, open := newSpoolLayers(size, size, size, size, size)
			q := newSpoolQueue(t.Context(), ls, []int{0, 1, 2, 3, 4}, 2, tc.sp)
			defer q.Close()
			s, _, _ := q.Next()
			if _, err := io.ReadFull(s, make([]byte, 1000)); err != nil {
				t.Fatal(err)
			}
			ahead := int64((exportSpoolChunks+1)*exportSpoolChunk) + tc.budget
			waitFor(t, "the open layers to fill their buffers", func() bool {
				n := int64(0)
				for _, c := range cs[1:exportOpenLayers] {
					n += c.read.Load()
				}
				return n >= int64(exportOpenLayers-1)*exportSpoolChunks*exportSpoolChunk
			})
			time.Sleep(50 * time.Millisecond) // let a decoder overrun its bound, if it would
			var total int64
			for i, c := range cs[1:] {
				total += c.read.Load()
				if r := c.read.Load(); r > ahead {
					t.Errorf("layer %d: read %d bytes ahead, more than %d", i+1, r, ahead)
				}
			}
			if bound := int64(exportOpenLayers-1)*int64((exportSpoolChunks+1)*exportSpoolChunk) + tc.budget; total > bound {
				t.Errorf("%d bytes read ahead in all, more than %d", total, bound)
			}
			if n := open.Load(); n != exportOpenLayers {
				t.Errorf("%d layers open, want %d", n, exportOpenLayers)
			}
			q.Close()
			if n := open.Load(); n != 0 {
				t.Errorf("%d layer streams left open", n)
			}
		})
	}
}

// TestSpoolQueueNoSpillContent reads layers through a queue that cannot spill: the decoders
// wait for the writer, and the content is the same.
func TestSpoolQueueNoSpillContent(t *testing.T) {
	ls, cs, _ := newSpoolLayers(3*exportSpoolChunk+1, 10*exportSpoolChunk, 7, exportSpoolChunk)
	q := newSpoolQueue(t.Context(), ls, []int{3, 2, 1, 0}, 1, newSpiller("", ""))
	defer q.Close()
	readAllLayers(t, q, cs, []int{3, 2, 1, 0})
}

// TestSpoolQueueErrors checks that a layer's error reaches the writer after all its bytes,
// also when they were spilled, and that cancelling stops the decoders and frees everything.
func TestSpoolQueueErrors(t *testing.T) {
	boom := errors.New("digest mismatch")
	const size = 5*exportSpoolChunk + 3
	ls, cs, open := newSpoolLayers(size, size)
	cs[0].err = boom
	sp := testSpiller(t, t.TempDir())
	q := newSpoolQueue(t.Context(), ls, []int{1, 0}, 2, sp)
	s, _, _ := q.Next()
	waitFor(t, "layer 0 decoded", func() bool { return cs[0].read.Load() == size })
	if _, err := io.ReadAll(s); err != nil {
		t.Fatal(err)
	}
	s.release()
	s, _, _ = q.Next()
	got, err := io.ReadAll(s)
	if !errors.Is(err, boom) || !bytes.Equal(got, expected(0, size)) {
		t.Errorf("ReadAll: %d bytes, %v; want %d bytes, then %v", len(got), err, size, boom)
	}
	q.Close()
	if open.Load() != 0 || sp.files.Load() != 0 {
		t.Errorf("%d layer streams and %d spill files left open", open.Load(), sp.files.Load())
	}

	ctx, cancel := context.WithCancel(t.Context())
	ls, _, open = newSpoolLayers(64<<20, 64<<20, 64<<20, 64<<20)
	sp = newSpiller("", "")
	q = newSpoolQueue(ctx, ls, []int{0, 1, 2, 3}, 2, sp)
	s, _, _ = q.Next()
	cancel()
	if _, err := io.ReadAll(s); !errors.Is(err, context.Canceled) {
		t.Errorf("read after cancel: %v, want context.Canceled", err)
	}
	q.Close() // must return: every decoder stops
	if open.Load() != 0 {
		t.Errorf("%d layer streams left open", open.Load())
	}
}

// TestSpoolQueueWriterStops: the writer gives up on a layer while the layers below still
// decode and spill (an export error); Close stops them and closes every stream and file.
func TestSpoolQueueWriterStops(t *testing.T) {
	ls, cs, open := newSpoolLayers(8<<20, 8<<20, 8<<20, 64<<20)
	sp := testSpiller(t, t.TempDir())
	q := newSpoolQueue(t.Context(), ls, []int{3, 2, 1, 0}, 2, sp)
	s, _, _ := q.Next()
	waitFor(t, "a lower layer spilling", func() bool { return cs[1].read.Load() > 2<<20 })
	if _, err := io.ReadFull(s, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	s.release()
	q.Close()
	if open.Load() != 0 || sp.files.Load() != 0 {
		t.Errorf("%d layer streams and %d spill files left open", open.Load(), sp.files.Load())
	}
}

// TestSpillerFallback: where O_TMPFILE does not work the spill file is a named temporary
// file, removed as soon as it is made.
func TestSpillerFallback(t *testing.T) {
	dir := t.TempDir()
	sp := testSpiller(t, dir)
	sp.noTmpfile = true
	f, err := sp.create()
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close(f)
	if _, err := f.WriteAt([]byte("spilled"), 0); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 0 {
		t.Errorf("spill directory holds %v (%v), want nothing", ents, err)
	}
}

// TestDecodeSchedHandsOver checks that a running decoder yields its slot to a waiting decoder
// of an earlier position, not of a later one, and that a cancelled waiter leaves no slot
// behind.
func TestDecodeSchedHandsOver(t *testing.T) {
	ctx := t.Context()
	d := newDecodeSched(1)
	if err := d.acquire(ctx, nil, 2); err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 2)
	for _, pos := range []int{3, 1} {
		go func() {
			if d.acquire(ctx, nil, pos) == nil {
				got <- pos
			}
		}()
	}
	waitFor(t, "two waiters", func() bool { d.mu.Lock(); defer d.mu.Unlock(); return len(d.waiting) == 2 })
	yielded := make(chan error, 1)
	go func() { yielded <- d.yield(ctx, nil, 2) }() // hands over to 1, waits behind it
	if pos := <-got; pos != 1 {
		t.Fatalf("slot went to position %d, want 1", pos)
	}
	d.release() // 1 is done: 2 comes before 3
	if err := <-yielded; err != nil {
		t.Fatal(err)
	}
	if err := d.yield(ctx, nil, 2); err != nil { // nobody earlier waits: keeps its slot
		t.Fatal(err)
	}
	select {
	case pos := <-got:
		t.Fatalf("position %d got a slot while 2 holds the only one", pos)
	default:
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := d.acquire(cctx, nil, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("acquire with a cancelled context: %v", err)
	}
	d.release()
	if pos := <-got; pos != 3 {
		t.Fatalf("slot went to position %d, want 3", pos)
	}
	d.release()
	if d.running != 0 || len(d.waiting) != 0 {
		t.Errorf("%d running, %d waiting at the end, want none", d.running, len(d.waiting))
	}
}

// TestExportSpillSameOutput checks that spilling changes nothing in Export's output: the
// same layers give the same bytes spilled or not, on a spent budget, and with one decoder.
func TestExportSpillSameOutput(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	var img [][]tartest.Entry
	for l := range 5 {
		var es []tartest.Entry
		if l > 0 {
			es = append(es, tartest.Whiteout(fmt.Sprintf("d%d/f0", l-1)))
		}
		es = append(es, tartest.Dir(fmt.Sprintf("d%d", l)))
		for i := range 40 {
			body := bytes.Repeat([]byte{byte('a' + l)}, r.IntN(3*exportSpoolChunk))
			es = append(es, tartest.File(fmt.Sprintf("d%d/f%d", l, i), string(body)))
		}
		es = append(es, tartest.Link(fmt.Sprintf("d%d/link", l), "d0/f1"))
		img = append(img, es)
	}
	layers := make([]Layer, len(img))
	for i, es := range img {
		layers[i] = bytesLayer(tartest.Tar(es...))
	}
	exportWith := func(sp *spiller, decoders int) []byte {
		t.Helper()
		var buf bytes.Buffer
		if err := export(t.Context(), &buf, layers, sp, decoders, nil); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	want := exportWith(newSpiller("", ""), 1)
	spent := testSpiller(t, t.TempDir())
	spent.budget.Store(exportSpoolChunk + 1)
	for name, got := range map[string][]byte{
		"spilled":      exportWith(testSpiller(t, t.TempDir()), 3),
		"spent budget": exportWith(spent, 2),
		"one decoder":  exportWith(testSpiller(t, t.TempDir()), 1),
	} {
		if !bytes.Equal(got, want) {
			t.Errorf("%s: output differs from the unspilled export", name)
		}
	}
}

// gatedLayer serves data, then err instead of io.EOF if set. Its reads wait until open is
// closed; it closes eof, if set, once it was read to its end.
type gatedLayer struct {
	data      []byte
	err       error
	open, eof chan struct{}
}

func (g gatedLayer) Uncompressed(context.Context) (io.ReadCloser, error) {
	return io.NopCloser(&gatedReader{g: g, r: bytes.NewReader(g.data)}), nil
}

type gatedReader struct {
	g gatedLayer
	r *bytes.Reader
}

func (r *gatedReader) Read(p []byte) (int, error) {
	if r.g.open != nil {
		<-r.g.open
	}
	n, err := r.r.Read(p)
	if err == io.EOF {
		if r.g.eof != nil {
			close(r.g.eof)
			r.g.eof = nil
		}
		if r.g.err != nil {
			err = r.g.err
		}
	}
	return n, err
}

// TestExportSpilledLayerFails: a lower layer decoded to its end (spilled) before the writer
// reads it still fails the export when its content does not verify, and the spill leaves
// nothing behind; the same layers verified export the same bytes as without spilling.
func TestExportSpilledLayerFails(t *testing.T) {
	boom := errors.New("layer diffID mismatch")
	big := bytes.Repeat([]byte("x"), 5*exportSpoolChunk)
	lower := tartest.Tar(tartest.File("lower", string(big)))
	upper := tartest.Tar(tartest.File("upper", "u"))
	for _, bad := range []bool{false, true} {
		lowerDone := make(chan struct{})
		layers := []Layer{
			gatedLayer{data: lower, err: map[bool]error{true: boom}[bad], eof: lowerDone},
			gatedLayer{data: upper, open: lowerDone}, // the writer waits until lower is decoded
		}
		dir := t.TempDir()
		sp := testSpiller(t, dir)
		budget := sp.budget.Load()
		var got bytes.Buffer
		err := export(t.Context(), &got, layers, sp, 2, nil)
		if bad {
			if !errors.Is(err, boom) {
				t.Errorf("export with a bad spilled layer: %v, want %v", err, boom)
			}
		} else {
			var want bytes.Buffer
			plain := []Layer{bytesLayer(lower), bytesLayer(upper)}
			if err2 := export(t.Context(), &want, plain, newSpiller("", ""), 1, nil); err != nil || err2 != nil {
				t.Fatalf("export: %v, %v", err, err2)
			}
			if !bytes.Equal(got.Bytes(), want.Bytes()) {
				t.Error("spilled export differs from the plain one")
			}
		}
		if spilled := budget - sp.budget.Load(); spilled < int64(len(big)) {
			t.Errorf("%d bytes spilled, want the lower layer's %d at least", spilled, len(big))
		}
		if n := sp.files.Load(); n != 0 {
			t.Errorf("%d spill files left open", n)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("spill directory holds %d entries", len(ents))
		}
	}
}

// TestSpillBudgetReturns: spilled bytes count against the budget until the writer has read
// them back (and freed them), so the budget bounds the disk that spilling holds at once.
func TestSpillBudgetReturns(t *testing.T) {
	const size = 3*spillPunchBatch + 5
	ls, cs, _ := newSpoolLayers(size, 10)
	sp := testSpiller(t, t.TempDir())
	initial := sp.budget.Load()
	q := newSpoolQueue(t.Context(), ls, []int{1, 0}, 2, sp)
	defer q.Close()
	s, _, _ := q.Next()
	waitFor(t, "layer 0 spilled", func() bool { return cs[0].read.Load() == size })
	if held := initial - sp.budget.Load(); held != size {
		t.Errorf("%d bytes of budget held after spilling %d", held, size)
	}
	if _, err := io.ReadAll(s); err != nil {
		t.Fatal(err)
	}
	s.release()
	s, _, _ = q.Next()
	if _, err := io.ReadAll(s); err != nil {
		t.Fatal(err)
	}
	if held := initial - sp.budget.Load(); held >= spillPunchBatch {
		t.Errorf("%d bytes of budget still held after reading the layer back", held)
	}
}
