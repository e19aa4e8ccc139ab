package progress

import (
	"io"
	"time"
)

// Renderer shows Events. Event and Close are safe to call from several goroutines; Close
// flushes and must be called once, after the last Event.
type Renderer interface {
	Event(Event)
	Close()
}

// Option configures a Renderer.
type Option func(*options)

type options struct {
	interval time.Duration
	now      func() time.Time
}

// WithInterval sets how often Plain and JSON output report an item that is still in
// progress (default 2s for Plain, 500ms for JSON; 0 reports every update).
func WithInterval(d time.Duration) Option { return func(o *options) { o.interval = d } }

// New returns a Renderer that writes to w (normally stderr) in mode m. Auto is resolved
// with Resolve.
func New(w io.Writer, m Mode, opts ...Option) Renderer {
	m = Resolve(m, w)
	o := options{interval: -1, now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if o.interval < 0 {
		o.interval = 2 * time.Second
		if m == JSON {
			o.interval = 500 * time.Millisecond
		}
	}
	switch m {
	case TTY:
		return newBars(w)
	case JSON:
		return newJSONLines(w, o)
	case Quiet:
		return nop{}
	}
	return newPlain(w, o)
}

type nop struct{}

func (nop) Event(Event) {}
func (nop) Close()      {}

// throttle remembers when each item was last reported.
type throttle struct {
	o    options
	last map[string]time.Time
}

// due reports whether an Update for id should be shown now.
func (t *throttle) due(id string) bool {
	now := t.o.now()
	if prev, ok := t.last[id]; ok && now.Sub(prev) < t.o.interval {
		return false
	}
	t.last[id] = now
	return true
}
