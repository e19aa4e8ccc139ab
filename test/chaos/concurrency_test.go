//go:build chaos

package chaos

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/imgrun/imgrun/internal/testutil"
)

// TestConcurrency races 8 imgrun processes (pulls, unpacks, exports and runs of two images
// that share layers) against one --root while `imgrun gc` runs in a loop. Each must succeed,
// or fail with one clean line and succeed on retry; afterwards every blob is stored once and
// intact, and every run and unpack saw the whole tree.
func TestConcurrency(t *testing.T) {
	testutil.RequiresRoot(t)
	reg := chaosRegistry(t)
	refA, refB := reg.Ref("chaos/a:1"), reg.Ref("chaos/b:1")
	work := t.TempDir()
	check := "busybox sha256sum /chaos/*.bin; ls /chaos/small | wc -l"

	// References from a root nobody else touches.
	ref := cli{root: filepath.Join(work, "ref-root"), insecure: []string{reg.Host}}
	want := map[string]string{}
	trees := map[string]map[string]string{}
	for _, r := range []string{refA, refB} {
		want[r] = ref.must(t, "run", r, "sh", "-c", check).stdout
		trees[r] = tree(t, mustUnpack(t, ref, r, filepath.Join(work, "ref-"+filepath.Base(strings.Split(r, ":")[1]))))
	}
	wantBlobs := checkBlobs(t, ref.root)

	rounds := pick(2, 20)
	var retried, ok atomic.Int64
	c := cli{root: filepath.Join(work, "root"), insecure: []string{reg.Host}}
	for round := range rounds {
		type job struct {
			name string
			args []string
			out  string // expected stdout (runs)
			dir  string // unpack DIR to compare
			ref  string
		}
		var jobs []job
		for i := range 8 {
			r := []string{refA, refB}[i%2]
			j := job{ref: r}
			switch i / 2 {
			case 0:
				j.args = []string{"pull", r}
			case 1:
				j.dir = filepath.Join(work, fmt.Sprintf("unpack-%d-%d", round, i))
				j.args = []string{"unpack", r, j.dir}
			case 2:
				j.args, j.out = []string{"run", "--pids-limit", "32", r, "sh", "-c", check}, want[r]
			case 3:
				j.args = []string{"export", r, "-o", filepath.Join(work, fmt.Sprintf("export-%d-%d.tar", round, i))}
			}
			j.name = fmt.Sprintf("round %d job %d (%s)", round, i, j.args[0])
			jobs = append(jobs, j)
		}
		stop := make(chan struct{})
		var gcDone sync.WaitGroup
		gcDone.Add(1)
		var gcs, gcFails atomic.Int64
		go func() {
			defer gcDone.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				gcs.Add(1)
				if r := c.run(t, "gc"); r.code != 0 {
					gcFails.Add(1)
					t.Logf("gc: exit %d: %s", r.code, r.lastLine())
				}
			}
		}()
		var wg sync.WaitGroup
		results := make([]result, len(jobs))
		for i, j := range jobs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = c.run(t, j.args...)
			}()
		}
		wg.Wait()
		close(stop)
		gcDone.Wait()
		t.Logf("round %d: gc ran %d times (%d failed)", round, gcs.Load(), gcFails.Load())

		for i, j := range jobs {
			r := results[i]
			if r.code != 0 {
				if strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 || !strings.HasPrefix(r.lastLine(), "imgrun: ") {
					finding(t, "%s failed without one clean error line: exit %d: %q", j.name, r.code, r.stderr)
				}
				t.Logf("%s failed (retrying): exit %d: %s", j.name, r.code, r.lastLine())
				retried.Add(1)
				if j.dir != "" {
					os.RemoveAll(j.dir)
				}
				if r = c.run(t, j.args...); r.code != 0 {
					finding(t, "%s failed again on retry: exit %d: %s", j.name, r.code, r.lastLine())
					continue
				}
			}
			ok.Add(1)
			if j.out != "" && r.stdout != j.out {
				finding(t, "%s saw another tree: got %q, want %q", j.name, r.stdout, j.out)
			}
			if j.dir != "" {
				if d := diffTrees(trees[j.ref], tree(t, j.dir)); len(d) > 0 {
					finding(t, "%s: unpack differs from the reference: %v", j.name, d)
				}
				os.RemoveAll(j.dir)
			}
		}
		checkVerify(t, c)
		if n := checkBlobs(t, c.root); n != wantBlobs {
			finding(t, "round %d: %d blobs stored, want %d (each once)", round, n, wantBlobs)
		}
		checkIndex(t, c.root)
		c.must(t, "gc")
		for _, sub := range []string{"ingest", "tmp", "runs"} {
			if left := dirEntries(c.root, sub); len(left) > 0 {
				finding(t, "round %d: ROOT/%s keeps %v after gc", round, sub, left)
			}
		}
		// Next round starts from an empty cache again, so the pulls race once more.
		c.must(t, "rmi", refA, refB)
		c.must(t, "gc")
		checkEmptyRoot(t, c.root)
	}
	t.Logf("%d rounds × 8 processes: %d succeeded, %d needed a retry", rounds, ok.Load(), retried.Load())
}
