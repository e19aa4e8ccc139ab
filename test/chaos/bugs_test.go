//go:build chaos

package chaos

import (
	"strings"
	"testing"

	"github.com/imgrun/imgrun/pkg/registry"
)

// TestReferenceRoundTrip replays what the fuzzers found in other packages through their
// exported API: a reference that parses must print as one that parses to itself.
func TestReferenceRoundTrip(t *testing.T) {
	for _, s := range []string{
		"node", "localhost:5000/a/b:c",
		strings.Repeat("0", 248), // found by FuzzParseReference (now a seed in pkg/registry/testdata/fuzz)
	} {
		r, err := registry.ParseReference(s)
		if err != nil {
			continue
		}
		if r2, err := registry.ParseReference(r.String()); err != nil || r2 != r {
			countFindings.Add(1)
			t.Errorf("ParseReference accepts %q (%d chars) but not its String() %q: %v", s, len(s), r.String(), err)
		}
	}
}
