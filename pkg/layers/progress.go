package layers

import "github.com/opencontainers/go-digest"

// EventKind says what a progress Event reports.
type EventKind int

const (
	// EventResolve: the reference is being resolved (Ref set).
	EventResolve EventKind = iota + 1
	// EventResolved: manifest and config are known; Total is the sum of the layer sizes.
	EventResolved
	// EventLayerStart: a layer download starts; Digest, Total (its size) and Done (bytes
	// already present from an earlier, interrupted download) are set.
	EventLayerStart
	// EventLayerBytes: Done of Total bytes of a layer are downloaded.
	EventLayerBytes
	// EventLayerCached: the layer was already in the store; nothing is fetched.
	EventLayerCached
	// EventLayerDone: the layer is verified and committed.
	EventLayerDone
	// EventRetry: a download broke and is resumed from Done (Err says why).
	EventRetry
	// EventDone: the pull finished; index.json names the image.
	EventDone
)

var eventNames = [...]string{"", "resolve", "resolved", "layer-start", "layer-bytes", "layer-cached", "layer-done", "retry", "done"}

// String returns the kind's short name ("layer-bytes"), as used in JSON progress lines.
func (k EventKind) String() string {
	if int(k) < len(eventNames) && k > 0 {
		return eventNames[k]
	}
	return "unknown"
}

// Event is one progress report.
type Event struct {
	Kind   EventKind
	Ref    string
	Digest digest.Digest
	Total  int64
	Done   int64
	Err    error
	Msg    string
}

// ProgressFunc receives progress events. It may be called from several goroutines at once
// and must return quickly: it runs on the download path.
type ProgressFunc func(Event)

func (p ProgressFunc) emit(e Event) {
	if p != nil {
		p(e)
	}
}
