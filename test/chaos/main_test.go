//go:build chaos

package chaos

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

var longFlag = flag.Bool("chaos.long", false, "long mode: many more kill points, concurrency rounds and 10-minute fuzzing (also IMGRUN_CHAOS=long)")

// imgrunBin is the imgrun binary (see imgrun); every test runs it as a subprocess.
var imgrunBin string

// Counts reported at the end of the run (and copied into README.md by hand).
var (
	countKills    atomic.Int64 // SIGKILLs that landed while imgrun was still running
	countRuns     atomic.Int64 // imgrun processes started
	countFindings atomic.Int64 // invariant violations (each also fails or skips its test)
)

// long reports whether the long mode was asked for.
func long() bool { return *longFlag || os.Getenv("IMGRUN_CHAOS") == "long" }

// pick returns short in the short mode and long in the long mode.
func pick(short, long_ int) int {
	if long() {
		return long_
	}
	return short
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if countRuns.Load() > 0 {
		fmt.Fprintf(os.Stderr, "chaos counts: mode=%s imgrun-processes=%d kills=%d findings=%d\n",
			map[bool]string{true: "long", false: "short"}[long()], countRuns.Load(), countKills.Load(), countFindings.Load())
	}
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// imgrun returns the imgrun binary, built on first use (not in TestMain: fuzz workers would
// each build it).
func imgrun(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "imgrun-chaos-bin-")
		if binErr != nil {
			return
		}
		imgrunBin = filepath.Join(binDir, "imgrun")
		out, err := exec.Command("go", "build", "-o", imgrunBin, "github.com/imgrun/imgrun/cmd/imgrun").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("building imgrun: %v: %s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return imgrunBin
}

// finding reports a violated guarantee: it fails the test and counts it.
func finding(t testing.TB, format string, args ...any) {
	t.Helper()
	countFindings.Add(1)
	t.Errorf("FINDING: "+format, args...)
}
