package rootfs

import (
	"context"
	"sync"
)

// decodeSched lets at most limit of Export's open layers decode at once, those needed first
// (the lowest positions in consumption order) first: a decoder hands its slot over, between
// two chunks, to a waiting decoder of an earlier position. So the writer's layer always
// decodes, and on two cores a big layer that the writer needs next is not slowed down by
// one it needs after it. The others wait with their decoder's few chunks of read-ahead.
type decodeSched struct {
	mu      sync.Mutex
	limit   int
	running int
	waiting []decodeWaiter
}

type decodeWaiter struct {
	pos     int
	granted chan struct{} // closed when the slot is handed over
}

func newDecodeSched(limit int) *decodeSched {
	return &decodeSched{limit: max(limit, 1)}
}

// acquire waits for a slot for the decoder of position pos. It fails only when ctx is done
// or stop is closed.
func (d *decodeSched) acquire(ctx context.Context, stop <-chan struct{}, pos int) error {
	d.mu.Lock()
	if d.running < d.limit {
		d.running++
		d.mu.Unlock()
		return nil
	}
	w := d.enqueue(pos)
	d.mu.Unlock()
	return d.wait(ctx, stop, w)
}

// enqueue adds a waiter for pos. d.mu must be held.
func (d *decodeSched) enqueue(pos int) decodeWaiter {
	w := decodeWaiter{pos: pos, granted: make(chan struct{})}
	d.waiting = append(d.waiting, w)
	return w
}

func (d *decodeSched) wait(ctx context.Context, stop <-chan struct{}, w decodeWaiter) error {
	var err error
	select {
	case <-w.granted:
		return nil
	case <-stop:
		err = errSpoolClosed
	case <-ctx.Done():
		err = ctx.Err()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, o := range d.waiting {
		if o.granted == w.granted {
			d.waiting = append(d.waiting[:i], d.waiting[i+1:]...)
			return err
		}
	}
	d.handOver() // granted meanwhile: pass the slot on
	return err
}

// release gives up a slot.
func (d *decodeSched) release() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.handOver()
}

// handOver passes a slot being given up to the first waiter, if any. d.mu must be held.
func (d *decodeSched) handOver() {
	i := d.first()
	if i < 0 {
		d.running--
		return
	}
	close(d.waiting[i].granted)
	d.waiting = append(d.waiting[:i], d.waiting[i+1:]...)
}

// first is the index of the waiter of the lowest position, or -1.
func (d *decodeSched) first() int {
	best := -1
	for i, w := range d.waiting {
		if best < 0 || w.pos < d.waiting[best].pos {
			best = i
		}
	}
	return best
}

// yield hands the slot of the decoder of position pos over to a waiting decoder of an
// earlier position, if there is one, and waits for a slot again.
func (d *decodeSched) yield(ctx context.Context, stop <-chan struct{}, pos int) error {
	d.mu.Lock()
	i := d.first()
	if i < 0 || d.waiting[i].pos > pos {
		d.mu.Unlock()
		return nil
	}
	close(d.waiting[i].granted)
	d.waiting = append(d.waiting[:i], d.waiting[i+1:]...)
	w := d.enqueue(pos)
	d.mu.Unlock()
	return d.wait(ctx, stop, w)
}
