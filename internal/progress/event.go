package progress

import (
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"
)

// Kind says what happened to the item an Event is about.
type Kind string

const (
	Resolving Kind = "resolve" // the image is being looked up (Ref); shown in JSON only
	Start     Kind = "start"   // a transfer began (Total may be known)
	Update    Kind = "update"  // Done bytes of Total have arrived
	Done      Kind = "done"    // the item is complete and verified
	Cached    Kind = "cached"  // the item was already present; nothing to transfer
	Retry     Kind = "retry"   // the transfer broke and resumes from Done (Err or Msg says why)
	Failed    Kind = "error"   // the transfer failed (Err says why)
	Info      Kind = "info"    // a message about the whole operation (Msg), no ID
)

// Event is one progress report. ID names the item (a blob digest); Ref the image it belongs to.
type Event struct {
	Kind  Kind
	ID    string
	Ref   string
	Total int64 // bytes; 0 or negative when unknown
	Done  int64 // bytes so far
	Msg   string
	Err   error
}

// Mode is how progress is shown.
type Mode string

const (
	Auto  Mode = "auto"  // TTY when the writer is a terminal, Plain otherwise
	TTY   Mode = "tty"   // redrawn bars, one per item
	Plain Mode = "plain" // a line per item every few seconds and at completion
	JSON  Mode = "json"  // one JSON object per line
	Quiet Mode = "quiet" // nothing
)

// ParseMode parses a --progress value: auto, tty, plain, json or quiet ("none" is an alias).
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(s)); m {
	case Auto, TTY, Plain, JSON, Quiet:
		return m, nil
	case "none":
		return Quiet, nil
	}
	return "", fmt.Errorf("invalid progress mode %q (want auto, tty, plain, json or quiet)", s)
}

// Resolve turns Auto into TTY or Plain depending on whether w is a terminal.
func Resolve(m Mode, w io.Writer) Mode {
	if m != Auto {
		return m
	}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return TTY
	}
	return Plain
}

// ShortID shortens "sha256:<64 hex>" to its first 12 hex digits, as docker shows layer IDs.
func ShortID(id string) string {
	if _, hex, ok := strings.Cut(id, ":"); ok {
		id = hex
	}
	if len(id) > 12 {
		id = id[:12]
	}
	return id
}

// FormatBytes renders n with binary units: "512 B", "1.5 KiB", "80.0 MiB".
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
