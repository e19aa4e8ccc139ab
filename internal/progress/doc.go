// Package progress shows the progress of downloads on stderr in one of four forms: bars on
// a terminal (bytes, speed, ETA), periodic plain lines for CI logs, JSON lines for machines,
// or nothing at all. It knows nothing about images: callers translate their own events
// (pkg/layers.Event) into Event.
//
//	p := progress.New(os.Stderr, progress.Auto)
//	p.Event(progress.Event{Kind: progress.Start, ID: "sha256:…", Total: n})
//	p.Event(progress.Event{Kind: progress.Update, ID: "sha256:…", Done: k, Total: n})
//	p.Event(progress.Event{Kind: progress.Done, ID: "sha256:…", Done: n, Total: n})
//	p.Close()
//
// A Renderer is safe for concurrent use: layers download in parallel.
package progress
