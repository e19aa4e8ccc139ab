package progress

import (
	"encoding/json"
	"io"
	"sync"
	"time"
)

// Line is one JSON line of --progress=json output.
type Line struct {
	Time  time.Time `json:"time"`
	Event Kind      `json:"event"`
	ID    string    `json:"id,omitempty"`
	Ref   string    `json:"ref,omitempty"`
	Total int64     `json:"total,omitempty"`
	Done  int64     `json:"done,omitempty"`
	Msg   string    `json:"msg,omitempty"`
	Error string    `json:"error,omitempty"`
}

type jsonLines struct {
	mu  sync.Mutex
	enc *json.Encoder
	t   throttle
}

func newJSONLines(w io.Writer, o options) *jsonLines {
	return &jsonLines{enc: json.NewEncoder(w), t: throttle{o: o, last: map[string]time.Time{}}}
}

func (j *jsonLines) Event(e Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	switch e.Kind {
	case Update:
		if !j.t.due(e.ID) {
			return
		}
	case Start:
		j.t.due(e.ID)
	case Done, Failed:
		delete(j.t.last, e.ID)
	}
	l := Line{Time: j.t.o.now().UTC(), Event: e.Kind, ID: e.ID, Ref: e.Ref, Total: e.Total, Done: e.Done, Msg: e.Msg}
	if e.Err != nil {
		l.Error = e.Err.Error()
	}
	_ = j.enc.Encode(l) // progress output is best effort; a closed stderr must not fail a pull
}

func (j *jsonLines) Close() {}
