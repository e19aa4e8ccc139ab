//go:build chaos

package chaos

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgrun/imgrun/internal/testutil"
)

// TestDiskFull puts --root on a small tmpfs that fills up during a pull, an unpack and a run's
// rootfs build: each must fail with a clear "no space left" error, exit non-zero and leave no
// partial blob or tree; once the tmpfs is made bigger the same command succeeds.
func TestDiskFull(t *testing.T) {
	testutil.RequiresRoot(t)
	reg := chaosRegistry(t)
	ref := reg.Ref("chaos/a:1")
	// The image is about 3 big files + busybox compressed; the tree needs as much again.
	imgMiB := 3*bigSize()>>20 + 2

	cases := []struct {
		name    string
		sizeMiB int      // tmpfs size while it fills
		prepull bool     // pull first (with room), then fill the tmpfs with a filler file
		args    []string // the command that fills the disk; DIR is replaced by a path on the tmpfs
	}{
		{name: "pull", sizeMiB: imgMiB / 2, args: []string{"pull", ref}},
		{name: "unpack", sizeMiB: imgMiB + imgMiB/2, prepull: true, args: []string{"unpack", "--pull", "never", ref, "DIR"}},
		{name: "run", sizeMiB: imgMiB + imgMiB/2, prepull: true, args: []string{"run", "--pull", "never", ref, "true"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mnt := t.TempDir()
			size := tc.sizeMiB
			if tc.prepull {
				size = 4 * imgMiB
			}
			mount(t, mnt, fmt.Sprintf("size=%dm", size))
			c := cli{root: filepath.Join(mnt, "root"), insecure: []string{reg.Host}}
			dir := filepath.Join(mnt, "out")
			args := make([]string, len(tc.args))
			for i, a := range tc.args {
				args[i] = strings.Replace(a, "DIR", dir, 1)
			}
			if tc.prepull {
				c.must(t, "pull", ref)
				// Fill the tmpfs to leave less room than the tree needs.
				filler := filepath.Join(mnt, "filler")
				free := freeBytes(t, mnt) - int64(imgMiB<<20)/2
				if err := os.WriteFile(filler, make([]byte, free), 0o600); err != nil {
					t.Fatalf("filler: %v", err)
				}
				defer os.Remove(filler)
			}
			r := c.run(t, args...)
			if i := strings.Index(r.stderr, "panic:"); i >= 0 {
				finding(t, "%s on a full disk panics instead of failing cleanly: %s", tc.name, oneLine(r.stderr[i:], 6))
			}
			if r.code == 0 {
				t.Fatalf("%s on a full disk succeeded (tmpfs too big for the test?)", tc.name)
			}
			if r.code != 125 {
				finding(t, "%s on a full disk: exit %d, want 125", tc.name, r.code)
			}
			line := r.lastLine()
			if !strings.Contains(strings.ToLower(line), "no space left") {
				finding(t, "%s on a full disk: error does not say \"no space left\": %s", tc.name, line)
			}
			if !strings.Contains(line, mnt) {
				finding(t, "%s on a full disk: the error does not name the disk (no path under --root): %s", tc.name, line)
			}
			if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n > 0 {
				t.Logf("stderr has %d lines: %s", n+1, r.stderr)
			}
			t.Logf("error: %s", line)
			checkBlobs(t, c.root)
			checkIndex(t, c.root)
			if left := dirEntries(c.root, "rootfs"); len(left) > 0 {
				finding(t, "a failed %s left trees under ROOT/rootfs: %v", tc.name, left)
			}
			if left := dirEntries(c.root, "snapshots"); len(left) > 0 {
				finding(t, "a failed %s left snapshots under ROOT/snapshots: %v", tc.name, left)
			}
			if left := dirEntries(c.root, "tmp"); len(left) > 0 {
				finding(t, "a failed %s left ROOT/tmp entries: %v", tc.name, left)
			}
			if left := dirEntries(mnt, ""); len(left) > 3 { // root, out?, filler
				t.Logf("tmpfs holds %v", left)
			}
			for _, n := range dirEntries(mnt, "") {
				if strings.HasPrefix(n, ".out.") || (n == "out" && len(dirEntries(dir, "")) > 0) {
					finding(t, "a failed unpack left a partial tree %s", n)
				}
			}
			if tc.name == "pull" && len(dirEntries(c.root, "ingest")) > 0 {
				t.Logf("ingest keeps %v (a resume hint)", dirEntries(c.root, "ingest"))
			}

			// Free space: grow the tmpfs; the same command must now succeed.
			remount(t, mnt, fmt.Sprintf("size=%dm", 8*imgMiB))
			if r := c.run(t, args...); r.code != 0 {
				finding(t, "%s after space was freed: exit %d: %s", tc.name, r.code, r.lastLine())
			}
			checkVerify(t, c)
			c.must(t, "gc")
			for _, sub := range []string{"ingest", "tmp"} {
				if left := dirEntries(c.root, sub); len(left) > 0 {
					finding(t, "ROOT/%s keeps %v after gc", sub, left)
				}
			}
		})
	}
}

func mount(t *testing.T, dir, opts string) {
	t.Helper()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "chaos-tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
}

func remount(t *testing.T, dir, opts string) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", "remount,"+opts, dir).CombinedOutput(); err != nil {
		t.Fatalf("remount tmpfs: %v: %s", err, out)
	}
}

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscallStatfs
	if err := statfs(dir, &st); err != nil {
		t.Fatalf("statfs: %v", err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}
