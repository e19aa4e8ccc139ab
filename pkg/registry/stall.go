package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// ErrStalled: a transfer delivered no bytes (or no response headers) for the stall timeout.
var ErrStalled = errors.New("transfer stalled")

// watchdog cancels a request's context when it makes no progress for timeout. Unlike
// one overall deadline it lets a slow but moving multi-GB download finish.
type watchdog struct {
	mu      sync.Mutex
	timer   *time.Timer
	timeout time.Duration
	cancel  context.CancelCauseFunc
}

// newWatchdog returns a context that is cancelled with ErrStalled after timeout without
// a kick. timeout 0 disables it.
func newWatchdog(ctx context.Context, timeout time.Duration) (context.Context, *watchdog) {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &watchdog{timeout: timeout, cancel: cancel}
	if timeout > 0 {
		w.timer = time.AfterFunc(timeout, func() {
			cancel(fmt.Errorf("no data for %s: %w", timeout, ErrStalled))
		})
	}
	return ctx, w
}

// kick restarts the countdown.
func (w *watchdog) kick() {
	if w.timer != nil {
		w.timer.Reset(w.timeout)
	}
}

// stop ends the watch and releases the context.
func (w *watchdog) stop() {
	if w.timer != nil {
		w.timer.Stop()
	}
	w.cancel(context.Canceled)
}

// stallReader kicks the watchdog on every read that delivers bytes and turns a
// watchdog cancellation into an ErrStalled error.
type stallReader struct {
	rc  io.ReadCloser
	ctx context.Context
	w   *watchdog
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.rc.Read(p)
	if n > 0 {
		s.w.kick()
	}
	if err != nil && err != io.EOF {
		if cause := context.Cause(s.ctx); errors.Is(cause, ErrStalled) {
			err = cause
		}
	}
	return n, err
}

func (s *stallReader) Close() error {
	err := s.rc.Close()
	s.w.stop()
	return err
}
