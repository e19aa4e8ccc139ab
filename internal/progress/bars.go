package progress

import (
	"io"
	"sync"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// bars draws one mpb bar per item: short ID, bytes done/total, speed and ETA.
type bars struct {
	mu   sync.Mutex
	p    *mpb.Progress
	bars map[string]*mpb.Bar
}

func newBars(w io.Writer) *bars {
	// WithAutoRefresh: --progress=tty means bars, whether or not stderr is a terminal.
	p := mpb.New(mpb.WithOutput(w), mpb.WithAutoRefresh())
	return &bars{p: p, bars: map[string]*mpb.Bar{}}
}

func (b *bars) bar(id string, total int64) *mpb.Bar {
	if bar, ok := b.bars[id]; ok {
		if total > 0 {
			bar.SetTotal(total, false)
		}
		return bar
	}
	bar := b.p.AddBar(max(total, 0),
		mpb.PrependDecorators(
			decor.Name(ShortID(id), decor.WC{C: decor.DindentRight | decor.DextraSpace}),
			decor.OnAbort(decor.CountersKibiByte("% .1f / % .1f", decor.WCSyncWidth), "failed"),
		),
		mpb.AppendDecorators(
			decor.OnComplete(decor.AverageSpeed(decor.SizeB1024(0), "% .1f", decor.WC{C: decor.DSyncWidth | decor.DextraSpace}), ""),
			decor.OnComplete(decor.AverageETA(decor.ET_STYLE_GO, decor.WC{C: decor.DextraSpace}), " done"),
		),
	)
	b.bars[id] = bar
	return bar
}

func (b *bars) Event(e Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch e.Kind {
	case Start:
		b.bar(e.ID, e.Total)
	case Update, Retry:
		b.bar(e.ID, e.Total).SetCurrent(e.Done)
	case Done, Cached:
		bar := b.bar(e.ID, e.Total)
		if e.Total > 0 {
			bar.SetCurrent(e.Total)
		}
		bar.SetTotal(-1, true)
	case Failed:
		b.bar(e.ID, e.Total).Abort(false)
	case Info:
		_, _ = b.p.Write([]byte(e.Msg + "\n"))
	}
}

func (b *bars) Close() {
	b.mu.Lock()
	for _, bar := range b.bars {
		if !bar.Completed() {
			bar.Abort(false) // a bar left open would make Wait block forever
		}
	}
	b.mu.Unlock()
	b.p.Wait()
}
