//go:build chaos

package chaos

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// fuzzTarget is one `func FuzzX(f *testing.F)` of the module.
type fuzzTarget struct{ dir, name string }

var fuzzFuncRE = regexp.MustCompile(`(?m)^func (Fuzz\w+)\(f \*testing\.F\)`)

// fuzzTargets finds every fuzz target under pkg/ and in this directory.
func fuzzTargets(t *testing.T) []fuzzTarget {
	var out []fuzzTarget
	for _, glob := range []string{"../../pkg/*/*_test.go", "../../internal/*/*_test.go", "*_test.go"} {
		files, _ := filepath.Glob(glob)
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range fuzzFuncRE.FindAllStringSubmatch(string(b), -1) {
				out = append(out, fuzzTarget{dir: filepath.Dir(f), name: m[1]})
			}
		}
	}
	return out
}

// TestFuzzLong runs every fuzz target for 10 minutes (IMGRUN_CHAOS_FUZZTIME overrides, e.g.
// 30s) in the long mode, one after the other, and reports the executions of each. A failure
// leaves its crasher in the target package's testdata/fuzz, as `go test -fuzz` does.
func TestFuzzLong(t *testing.T) {
	targets := fuzzTargets(t)
	if len(targets) == 0 {
		t.Fatal("no fuzz targets found")
	}
	if !long() {
		t.Skipf("long mode only (IMGRUN_CHAOS=long); targets: %v", targets)
	}
	fuzztime := "10m"
	if d := os.Getenv("IMGRUN_CHAOS_FUZZTIME"); d != "" {
		fuzztime = d
	}
	only := os.Getenv("IMGRUN_CHAOS_FUZZ") // a regexp of target names to run
	dur, err := time.ParseDuration(fuzztime)
	if err != nil {
		t.Fatalf("IMGRUN_CHAOS_FUZZTIME: %v", err)
	}
	execsRE := regexp.MustCompile(`elapsed: (\S+), execs: (\d+) .*new interesting: (\d+) \(total: (\d+)\)`)
	for _, tg := range targets {
		if only != "" && !regexp.MustCompile(only).MatchString(tg.name) {
			continue
		}
		t.Run(tg.name, func(t *testing.T) {
			// Minimizing every new interesting input (60 s by default) stalls slow targets for minutes.
			args := []string{"test", "-run", "^$", "-fuzz", "^" + tg.name + "$", "-fuzztime", fuzztime, "-fuzzminimizetime", "10s"}
			if tg.dir == "." {
				args = append(args, "-tags", "chaos")
			}
			args = append(args, "./"+tg.dir)
			ctx, cancel := context.WithTimeout(context.Background(), dur+15*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "go", args...)
			if tg.dir != "." {
				cmd.Args[len(cmd.Args)-1] = tg.dir
			}
			corpus := filepath.Join(tg.dir, "testdata", "fuzz", tg.name)
			before := map[string]bool{}
			for _, n := range dirEntries(corpus, "") {
				before[n] = true
			}
			out, err := cmd.CombinedOutput()
			if tg.dir != "." {
				// A failing input lands in the target package's testdata, which belongs to that
				// package's owner: move it here (testdata/crashers) and report it.
				for _, n := range dirEntries(corpus, "") {
					if before[n] {
						continue
					}
					dst := filepath.Join("testdata", "crashers", filepath.Base(tg.dir)+"-"+tg.name+"-"+n)
					if err := os.MkdirAll(filepath.Dir(dst), 0o755); err == nil && os.Rename(filepath.Join(corpus, n), dst) == nil {
						t.Logf("crasher moved to test/chaos/%s; repro: mkdir -p %s && cp test/chaos/%s %s/%s && go test -run '%s/%s' ./%s",
							dst, strings.TrimPrefix(corpus, "../../"), dst, strings.TrimPrefix(corpus, "../../"), n, tg.name, n, strings.TrimPrefix(tg.dir, "../../"))
					}
				}
				if len(before) == 0 {
					os.Remove(corpus) // leave no empty directories behind
					os.Remove(filepath.Dir(corpus))
					os.Remove(filepath.Dir(filepath.Dir(corpus)))
				}
			}
			var last []string
			sc := bufio.NewScanner(strings.NewReader(string(out)))
			for sc.Scan() {
				if m := execsRE.FindStringSubmatch(sc.Text()); m != nil {
					last = m
				}
			}
			if last != nil {
				t.Logf("%s (%s): %s execs in %s, %s new interesting (corpus %s)", tg.name, tg.dir, last[2], last[1], last[3], last[4])
			}
			if err != nil {
				countFindings.Add(1)
				t.Errorf("FINDING: go %s: %v\n%s", strings.Join(args, " "), err, tail(string(out), 40))
			}
		})
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
