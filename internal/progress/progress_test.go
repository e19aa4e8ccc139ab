package progress_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/imgrun/imgrun/internal/progress"
)

const id = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// download sends the events of one layer of 3 MiB arriving in three parts, plus a cached one.
func download(r progress.Renderer) {
	const total = 3 << 20
	r.Event(progress.Event{Kind: progress.Info, Msg: "resolving"})
	r.Event(progress.Event{Kind: progress.Start, ID: id, Total: total})
	for done := int64(1 << 20); done <= total; done += 1 << 20 {
		r.Event(progress.Event{Kind: progress.Update, ID: id, Total: total, Done: done})
		if done == 1<<20 {
			r.Event(progress.Event{Kind: progress.Retry, ID: id, Total: total, Done: done, Err: errors.New("reset")})
		}
	}
	r.Event(progress.Event{Kind: progress.Done, ID: id, Total: total, Done: total})
	r.Event(progress.Event{Kind: progress.Cached, ID: "sha256:ffff", Total: 10})
	r.Event(progress.Event{Kind: progress.Failed, ID: "sha256:eeee", Err: errors.New("boom")})
	r.Close()
}

func TestJSONLines(t *testing.T) {
	var buf bytes.Buffer
	download(progress.New(&buf, progress.JSON, progress.WithInterval(0)))
	var kinds []progress.Kind
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		var l progress.Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q is not JSON: %v", sc.Text(), err)
		}
		if l.Time.IsZero() {
			t.Errorf("line %q has no time", sc.Text())
		}
		kinds = append(kinds, l.Event)
		if l.Event == progress.Done && (l.ID != id || l.Done != 3<<20) {
			t.Errorf("done line = %+v", l)
		}
		if l.Event == progress.Failed && l.Error != "boom" {
			t.Errorf("error line = %+v", l)
		}
	}
	want := "info start update retry update update done cached error"
	if got := joinKinds(kinds); got != want {
		t.Errorf("events = %q, want %q", got, want)
	}
}

func TestJSONThrottlesUpdates(t *testing.T) {
	var buf bytes.Buffer
	// A long interval: only start and done (never throttled) and the first update pass.
	download(progress.New(&buf, progress.JSON, progress.WithInterval(1<<62)))
	if n := strings.Count(buf.String(), `"event":"update"`); n != 0 {
		t.Errorf("%d update lines within one interval of the start, want 0:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), `"event":"done"`) {
		t.Errorf("no done line:\n%s", buf.String())
	}
}

func TestPlain(t *testing.T) {
	var buf bytes.Buffer
	download(progress.New(&buf, progress.Plain, progress.WithInterval(0)))
	want := strings.Join([]string{
		"resolving",
		"0123456789ab: downloading 3.0 MiB",
		"0123456789ab: 1.0 MiB / 3.0 MiB (33%)",
		"0123456789ab: retrying from 1.0 MiB: reset",
		"0123456789ab: 2.0 MiB / 3.0 MiB (66%)",
		"0123456789ab: 3.0 MiB / 3.0 MiB (100%)",
		"0123456789ab: done 3.0 MiB",
		"ffff: already present",
		"eeee: failed: boom",
		"",
	}, "\n")
	if got := buf.String(); got != want {
		t.Errorf("plain output:\n%s\nwant:\n%s", got, want)
	}
}

func TestQuiet(t *testing.T) {
	var buf bytes.Buffer
	download(progress.New(&buf, progress.Quiet))
	if buf.Len() != 0 {
		t.Errorf("quiet wrote %q", buf.String())
	}
}

// TestBars checks that bars finish (Close returns) and draw the layer's short ID, also with
// events coming from several goroutines at once.
func TestBars(t *testing.T) {
	var buf syncBuffer
	r := progress.New(&buf, progress.TTY)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			lid := id[:len(id)-1] + string(rune('0'+i))
			r.Event(progress.Event{Kind: progress.Start, ID: lid, Total: 100})
			r.Event(progress.Event{Kind: progress.Update, ID: lid, Total: 100, Done: 50})
			if i == 3 {
				r.Event(progress.Event{Kind: progress.Failed, ID: lid, Err: errors.New("boom")})
				return
			}
			r.Event(progress.Event{Kind: progress.Done, ID: lid, Total: 100, Done: 100})
		})
	}
	wg.Wait()
	r.Event(progress.Event{Kind: progress.Start, ID: "sha256:never-finished", Total: 100})
	r.Close() // must not hang on the unfinished bar
	if !strings.Contains(buf.String(), "0123456789ab") {
		t.Errorf("bars output lacks the short ID:\n%q", buf.String())
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]progress.Mode{"auto": progress.Auto, "TTY": progress.TTY, "plain": progress.Plain, "json": progress.JSON, "quiet": progress.Quiet, "none": progress.Quiet} {
		if got, err := progress.ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := progress.ParseMode("fancy"); err == nil {
		t.Error("ParseMode(fancy) succeeded")
	}
	// A buffer is not a terminal.
	if got := progress.Resolve(progress.Auto, &bytes.Buffer{}); got != progress.Plain {
		t.Errorf("Resolve(auto, buffer) = %q, want plain", got)
	}
}

func TestFormat(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 80 << 20: "80.0 MiB", 3 << 29: "1.5 GiB"} {
		if got := progress.FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
	if got := progress.ShortID(id); got != "0123456789ab" {
		t.Errorf("ShortID = %q", got)
	}
}

func joinKinds(ks []progress.Kind) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = string(k)
	}
	return strings.Join(s, " ")
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
