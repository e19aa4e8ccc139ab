package progress

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// plain writes one line per item when it starts, every interval while it runs, and when
// it ends: readable in CI logs, where redrawn bars turn into garbage.
type plain struct {
	mu sync.Mutex
	w  io.Writer
	t  throttle
}

func newPlain(w io.Writer, o options) *plain {
	return &plain{w: w, t: throttle{o: o, last: map[string]time.Time{}}}
}

func (p *plain) Event(e Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	id := ShortID(e.ID)
	switch e.Kind {
	case Start:
		p.t.due(e.ID) // the next update comes one interval later
		fmt.Fprintf(p.w, "%s: downloading %s\n", id, sizeOrUnknown(e.Total))
	case Update:
		if !p.t.due(e.ID) {
			return
		}
		if e.Total > 0 {
			fmt.Fprintf(p.w, "%s: %s / %s (%d%%)\n", id, FormatBytes(e.Done), FormatBytes(e.Total), e.Done*100/e.Total)
		} else {
			fmt.Fprintf(p.w, "%s: %s\n", id, FormatBytes(e.Done))
		}
	case Done:
		delete(p.t.last, e.ID)
		fmt.Fprintf(p.w, "%s: done %s\n", id, FormatBytes(max(e.Done, e.Total)))
	case Cached:
		fmt.Fprintf(p.w, "%s: already present\n", id)
	case Retry:
		why := e.Msg
		if e.Err != nil {
			why = e.Err.Error()
		}
		fmt.Fprintf(p.w, "%s: retrying from %s: %s\n", id, FormatBytes(e.Done), why)
	case Failed:
		delete(p.t.last, e.ID)
		fmt.Fprintf(p.w, "%s: failed: %v\n", id, e.Err)
	case Info:
		fmt.Fprintln(p.w, e.Msg)
	}
}

func (p *plain) Close() {}

func sizeOrUnknown(n int64) string {
	if n <= 0 {
		return "(size unknown)"
	}
	return FormatBytes(n)
}
