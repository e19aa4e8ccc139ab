//go:build chaos

package chaos

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imgrun/imgrun/internal/testreg"
	"github.com/imgrun/imgrun/internal/testutil"
)

// TestCrash kills imgrun with SIGKILL at random moments during pull, unpack, export and run,
// then runs the same command again and checks the crash rules of docs/DESIGN.md: the rerun
// succeeds, every blob is intact, index.json lists only complete images, no half-built tree
// is used, and the next invocation or gc removes every leftover.
func TestCrash(t *testing.T) {
	testutil.RequiresRoot(t) // run's cgroups and namespaces
	kills := pick(5, 50)
	fast := chaosRegistry(t)
	// The pull's registry trickles blobs (256 KiB every 10 ms) so a kill lands mid-download.
	slow := chaosRegistry(t, testreg.WithFaults(testreg.Fault{Method: "GET", Kind: testreg.KindBlob,
		Action: testreg.Trickle(256<<10, 10*time.Millisecond)}))
	work := t.TempDir()
	c := cli{root: filepath.Join(work, "root"), insecure: []string{fast.Host, slow.Host}}
	ref := fast.Ref("chaos/a:1")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	t.Logf("kill points per command: %d", kills)

	// The reference results, from runs nobody killed.
	c.must(t, "pull", ref)
	refTree := tree(t, mustUnpack(t, c, ref, filepath.Join(work, "ref-tree")))
	refExport := filepath.Join(work, "ref.tar")
	c.must(t, "export", ref, "-o", refExport)
	refExportSum, _ := fileSHA256(refExport)

	// killAt picks a kill moment in [0, 1.2*ref) of an uninterrupted run's duration.
	killAt := func(ref time.Duration) time.Duration {
		return time.Duration(rng.Int64N(int64(ref)*6/5)) + time.Millisecond
	}
	stats := map[string]int{}
	defer func() { t.Logf("kills that landed mid-command: %v (of %d tries each)", stats, kills) }()

	// Temporary siblings of unpack's DIR and export's FILE (".DIR.imgrun-tmp-*", ".FILE.tmp-*")
	// that a killed command leaves outside ROOT: neither the next invocation nor gc can find them.
	siblings := map[string]bool{}

	t.Run("pull", func(t *testing.T) {
		sref := slow.Ref("chaos/a:1")
		cp := cli{root: filepath.Join(work, "root-pull"), insecure: c.insecure}
		tref := cp.must(t, "pull", sref).dur
		for i := range kills {
			cp.must(t, "rmi", sref)
			cp.must(t, "gc")
			checkEmptyRoot(t, cp.root)
			if cp.start(t, killAt(tref), "pull", sref)().killed {
				stats["pull"]++
			}
			checkBlobs(t, cp.root)
			checkIndex(t, cp.root)
			if r := cp.run(t, "pull", sref); r.code != 0 {
				finding(t, "kill %d: pull after a killed pull: exit %d: %s", i, r.code, r.lastLine())
			}
			checkAfter(t, cp, sref)
		}
	})

	t.Run("unpack", func(t *testing.T) {
		tref := c.must(t, "unpack", ref, filepath.Join(work, "unpack-timing")).dur
		for i := range kills {
			dir := filepath.Join(work, fmt.Sprintf("unpack-%d", i))
			if c.start(t, killAt(tref), "unpack", ref, dir)().killed {
				stats["unpack"]++
			}
			// A kill that lands after the rename leaves DIR whole: then the rerun refuses the
			// non-empty DIR, as any unpack into a non-empty directory does. A partial DIR never shows.
			complete := len(dirEntries(dir, "")) > 0
			if complete {
				if d := diffTrees(refTree, tree(t, dir)); len(d) > 0 {
					finding(t, "kill %d: a killed unpack left a partial DIR: %v", i, d)
				}
			}
			r := c.run(t, "unpack", ref, dir)
			switch {
			case complete && r.code != 0 && strings.Contains(r.stderr, "not empty"):
			case r.code != 0:
				finding(t, "kill %d: unpack after a killed unpack: exit %d: %s", i, r.code, r.lastLine())
				continue
			}
			if d := diffTrees(refTree, tree(t, dir)); len(d) > 0 {
				finding(t, "kill %d: unpack differs from the reference unpack: %v", i, d)
			}
			checkAfter(t, c, ref)
			siblings[filepath.Base(dir)] = true
			os.RemoveAll(dir)
		}
	})

	t.Run("export", func(t *testing.T) {
		tref := c.must(t, "export", ref, "-o", filepath.Join(work, "export-timing.tar")).dur
		for i := range kills {
			out := filepath.Join(work, fmt.Sprintf("export-%d.tar", i))
			if c.start(t, killAt(tref), "export", ref, "-o", out)().killed {
				stats["export"]++
			}
			if _, err := os.Stat(out); err == nil {
				// A killed export must leave no FILE at all (or the whole of it).
				if sum, _ := fileSHA256(out); sum != refExportSum {
					finding(t, "kill %d: a killed export left a partial %s", i, out)
				}
			}
			if r := c.run(t, "export", ref, "-o", out); r.code != 0 {
				finding(t, "kill %d: export after a killed export: exit %d: %s", i, r.code, r.lastLine())
				continue
			}
			if sum, _ := fileSHA256(out); sum != refExportSum {
				finding(t, "kill %d: export differs from the reference export", i)
			}
			checkAfter(t, c, ref)
			siblings[filepath.Base(out)] = true
			os.Remove(out)
		}
	})

	t.Run("siblings", func(t *testing.T) {
		var left []string
		for _, n := range dirEntries(work, "") {
			for s := range siblings {
				if strings.HasPrefix(n, "."+s+".") {
					left = append(left, n)
				}
			}
		}
		if len(left) > 0 {
			finding(t, "a killed unpack/export left a temp sibling of DIR/FILE that the rerun did not remove: %v", left)
		}
	})

	t.Run("run", func(t *testing.T) {
		cr := cli{root: filepath.Join(work, "root-run"), insecure: c.insecure}
		marker := fmt.Sprintf("chaos-crash-%d", rng.Int64())
		// --pids-limit makes the run create a cgroup, so a killed run can leave one behind.
		args := []string{"run", "--pids-limit", "64", ref, "sh", "-c",
			// The background sh (double-forked) would outlive a leaky run by 60 s: it carries the marker.
			`(sh -c "sleep 60; : ` + marker + `" &); echo started; sleep 1.5; cat /chaos/l2.bin /chaos/small/f001 >/dev/null; echo done`}
		cold := func() { // drop the cached rootfs so the next run builds it again
			cr.must(t, "rmi", ref)
			cr.must(t, "gc")
			cr.must(t, "pull", ref)
		}
		cr.must(t, "pull", ref)
		tref := cr.must(t, args...).dur
		var ids []string
		for i := range kills {
			cold()
			before := cgroupNames()
			if cr.start(t, killAt(tref), args...)().killed {
				stats["run"]++
			}
			// Everything of the killed run dies with it (pdeathsig, PID namespace).
			if p := waitGone(marker, 3*time.Second); len(p) > 0 {
				finding(t, "kill %d: processes of the killed run survive it: %v", i, p)
			}
			// The cgroups that appeared during the killed run and outlived it are its own
			// (or, rarely, a run another test on this machine has going right now).
			for n := range cgroupNames() {
				if !before[n] {
					ids = append(ids, n)
					t.Logf("kill %d hit a live run: its cgroup %s is left for now", i, n)
				}
			}
			checkBlobs(t, cr.root)
			checkIndex(t, cr.root)
			r := cr.run(t, args...)
			if r.code != 0 || !strings.Contains(r.stdout, "done") {
				finding(t, "kill %d: run after a killed run: exit %d: %q %s", i, r.code, r.stdout, r.lastLine())
			}
			if p := waitGone(marker, 3*time.Second); len(p) > 0 {
				finding(t, "kill %d: processes of a run survive it: %v", i, p)
			}
			if left := dirEntries(cr.root, "runs"); len(left) > 0 {
				finding(t, "kill %d: ROOT/runs keeps %v after the next run", i, left)
			}
			checkRootfsCache(t, cr.root, refTree)
			checkSnapshots(t, cr.root, refTree)
			checkAfter(t, cr, ref)
		}
		// TestStaleCgroups, which runs after the other tests, checks that the next run with
		// a limit removes these.
		killedCgroups.Lock()
		killedCgroups.names = append(killedCgroups.names, ids...)
		killedCgroups.Unlock()
	})
}

// waitGone waits up to d for every process with marker in its argv to end, and returns
// those still running.
func waitGone(marker string, d time.Duration) []string {
	end := time.Now().Add(d)
	for {
		p := processesWith(marker)
		if len(p) == 0 || time.Now().After(end) {
			return p
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mustUnpack unpacks ref into dir and returns dir.
func mustUnpack(t *testing.T, c cli, ref, dir string) string {
	t.Helper()
	c.must(t, "unpack", ref, dir)
	return dir
}

// checkAfter runs the checks every successful rerun must pass, then gc, then the leftover
// checks: nothing in ingest/ or tmp/, no mount under ROOT.
func checkAfter(t *testing.T, c cli, ref string) {
	t.Helper()
	checkVerify(t, c)
	checkBlobs(t, c.root)
	if names := checkIndex(t, c.root); len(names) != 1 {
		finding(t, "index.json lists %v, want exactly %s", names, ref)
	}
	if r := c.run(t, "gc"); r.code != 0 {
		finding(t, "gc: exit %d: %s", r.code, r.lastLine())
	}
	for _, sub := range []string{"ingest", "tmp"} {
		if left := dirEntries(c.root, sub); len(left) > 0 {
			finding(t, "ROOT/%s keeps %v after gc", sub, left)
		}
	}
	if m := mountsUnder(t, c.root); len(m) > 0 {
		finding(t, "mounts left under ROOT: %v", m)
	}
}

// checkEmptyRoot checks that rmi + gc left no blob and no tree.
func checkEmptyRoot(t *testing.T, root string) {
	t.Helper()
	for _, sub := range []string{"oci/blobs/sha256", "rootfs", "snapshots", "tmp", "ingest"} {
		if left := dirEntries(root, sub); len(left) > 0 {
			finding(t, "ROOT/%s keeps %d entries after rmi + gc", sub, len(left))
		}
	}
}

// checkRootfsCache compares every cached tree under ROOT/rootfs with the reference unpack.
func checkRootfsCache(t *testing.T, root string, want map[string]string) {
	t.Helper()
	for _, n := range dirEntries(root, "rootfs") {
		if d := diffTrees(want, tree(t, filepath.Join(root, "rootfs", n))); len(d) > 0 {
			finding(t, "cached rootfs %s differs from the reference unpack: %v", n, d)
		}
	}
}
