//go:build chaos

package chaos

import (
	"archive/tar"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/imgrun/imgrun/internal/testimage"
	"github.com/imgrun/imgrun/internal/testutil"
)

// allocator allocates and touches memory without bound.
const allocator = `package main

import (
	"fmt"
	"os"
)

func main() {
	var keep [][]byte
	for i := 0; ; i++ {
		b := make([]byte, 1<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = 1
		}
		keep = append(keep, b)
		if i%16 == 0 {
			fmt.Fprintln(os.Stderr, "allocated MiB:", i)
		}
	}
}
`

// TestLauncherAbuse runs hostile commands in the busybox image (plus a layer with an
// allocator and device nodes) and checks that each is contained and that nothing of the run
// outlives it.
func TestLauncherAbuse(t *testing.T) {
	testutil.RequiresRoot(t)
	alloc, err := os.ReadFile(testutil.BuildGo(t, "chaos-alloc", allocator))
	if err != nil {
		t.Fatal(err)
	}
	var hostDisk os.FileInfo
	for _, d := range []string{"/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/loop0"} {
		if fi, err := os.Stat(d); err == nil {
			hostDisk = fi
			break
		}
	}
	extra := []testimage.Entry{{Name: "alloc", Type: tar.TypeReg, Mode: 0o755, Data: alloc},
		{Name: "mem", Type: tar.TypeChar, Mode: 0o666, Major: 1, Minor: 1}} // /dev/mem
	diskMaj, diskMin := uint64(254), uint64(0)
	if hostDisk != nil {
		rdev := hostDisk.Sys().(*syscallStat).Rdev
		diskMaj, diskMin = uint64(rdev>>8)&0xfff, uint64(rdev&0xff)|uint64(rdev>>12)&0xfff00
	}
	extra = append(extra, testimage.Entry{Name: "disk", Type: tar.TypeBlock, Mode: 0o666, Major: int64(diskMaj), Minor: int64(diskMin)})
	cfg := v1.Config{Env: []string{"PATH=" + testimage.DefaultPath}, Cmd: []string{"sh"}}
	img := testimage.Image(t, cfg, true, testimage.OCILayer(t, testimage.BusyboxEntries(t)...), testimage.OCILayer(t, extra...))
	reg := chaosRegistry(t)
	reg.Push(t, "chaos/abuse:1", img)
	ref := reg.Ref("chaos/abuse:1")
	c := cli{root: filepath.Join(t.TempDir(), "root"), insecure: []string{reg.Host}, deadline: 90 * time.Second}
	c.must(t, "pull", ref)
	marker := func() string { return fmt.Sprintf("chaos-marker-%d", rand.Int64()) }

	t.Run("fork bomb stopped by --pids-limit", func(t *testing.T) {
		m := marker()
		wait := c.start(t, 0, "run", "--pids-limit", "32", ref, "sh", "-c",
			"f() { f | f & }; f; sleep 3; echo still-here; : "+m)
		peak := 0
		for range 20 {
			time.Sleep(150 * time.Millisecond)
			peak = max(peak, len(processesWith(m)))
		}
		r := wait()
		t.Logf("exit %d, peak %d bomb processes seen on the host; %s", r.code, peak, r.lastLine())
		if peak > 32 {
			finding(t, "%d processes at once despite --pids-limit 32", peak)
		}
		if r.code == 125 {
			finding(t, "imgrun failed: %s", r.stderr)
		}
		time.Sleep(300 * time.Millisecond)
		if p := processesWith(m); len(p) > 0 {
			finding(t, "%d bomb processes survive the run", len(p))
		}
	})

	t.Run("allocator OOM-killed under --memory 32m", func(t *testing.T) {
		r := c.run(t, "run", "--memory", "32m", ref, "/alloc")
		t.Logf("exit %d: %s", r.code, r.lastLine())
		if r.code != 137 {
			finding(t, "allocator under --memory 32m: exit %d, want 137: %s", r.code, r.lastLine())
		}
		// The host is fine: imgrun (and this test) still run.
		if r := c.run(t, "run", ref, "true"); r.code != 0 {
			finding(t, "a run after the OOM kill failed: %s", r.lastLine())
		}
	})

	t.Run("remount / and /proc read-write", func(t *testing.T) {
		r := c.run(t, "run", "--read-only", ref, "sh", "-c",
			"mount -o remount,rw / 2>/dev/null; echo root=$?; mount -o remount,rw /proc 2>/dev/null; echo proc=$?; "+
				"touch /x 2>/dev/null; echo touch=$?; (echo h > /proc/sysrq-trigger) 2>/dev/null; echo sysrq=$?")
		t.Logf("exit %d: %q", r.code, r.stdout)
		for _, k := range []string{"root", "proc", "touch", "sysrq"} {
			if !strings.Contains(r.stdout, k+"=") {
				finding(t, "no %s result: %q %s", k, r.stdout, r.stderr)
			} else if strings.Contains(r.stdout, k+"=0\n") {
				finding(t, "%s succeeded inside the container: %q", k, r.stdout)
			}
		}
	})

	t.Run("device nodes unusable", func(t *testing.T) {
		r := c.run(t, "run", ref, "sh", "-c", fmt.Sprintf(
			"head -c 16 /mem >/dev/null 2>&1; echo mem=$?; head -c 16 /disk >/dev/null 2>&1; echo disk=$?; "+
				"mknod /tmp/d b %d %d 2>/dev/null && head -c 16 /tmp/d >/dev/null 2>&1; echo tmpdisk=$?; "+
				"mknod /dev/d b %d %d 2>/dev/null && head -c 16 /dev/d >/dev/null 2>&1; echo devdisk=$?; "+
				"mknod /d b %d %d 2>/dev/null && head -c 16 /d >/dev/null 2>&1; echo rootdisk=$?",
			diskMaj, diskMin, diskMaj, diskMin, diskMaj, diskMin))
		t.Logf("exit %d: %q (host disk %d:%d)", r.code, r.stdout, diskMaj, diskMin)
		for _, k := range []string{"mem", "disk", "tmpdisk", "devdisk", "rootdisk"} {
			if !strings.Contains(r.stdout, k+"=") {
				finding(t, "no %s result: %q %s", k, r.stdout, r.stderr)
			} else if strings.Contains(r.stdout, k+"=0\n") {
				finding(t, "a device node was readable inside the container (%s): %q", k, r.stdout)
			}
		}
	})

	t.Run("host files through /proc/N/root", func(t *testing.T) {
		secretDir, err := os.MkdirTemp("/var/tmp", "chaos-secret-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(secretDir)
		secret := marker()
		must(t, os.WriteFile(filepath.Join(secretDir, "secret"), []byte(secret), 0o644))
		binSum, _ := fileSHA256(imgrun(t))
		// The run's init (imgrun's binary, kept as PID 1 like docker --init) may be visible,
		// but neither its view of the host nor its binary may be reachable through /proc.
		r := c.run(t, "run", ref, "sh", "-c", fmt.Sprintf(
			"for p in /proc/[0-9]*; do cat $p/root%[1]s/secret $p/cwd%[1]s/secret 2>/dev/null; "+
				"head -c 4 $p/exe >/dev/null 2>&1 && echo exe-readable:$p; "+
				"(echo x >> $p/exe) 2>/dev/null && echo exe-writable:$p; "+
				"ls $p/root/ 2>/dev/null | grep -q chaos-secret && echo host-root:$p; done; "+
				"echo pids: /proc/[0-9]*; ls -l /proc/[0-9]*/exe 2>&1", secretDir))
		t.Logf("exit %d: %q", r.code, r.stdout)
		if strings.Contains(r.stdout, secret) {
			finding(t, "a host file was read from inside the container")
		}
		for _, bad := range []string{"exe-writable:", "host-root:", "imgrun-chaos-bin"} {
			if strings.Contains(r.stdout, bad) {
				finding(t, "the launcher is reachable from inside the container (%s): %q", bad, r.stdout)
			}
		}
		if strings.Contains(r.stdout, "exe-readable:/proc/1\n") {
			finding(t, "the init's binary (/proc/1/exe) is readable inside the container: %q", r.stdout)
		}
		if !strings.Contains(r.stdout, "pids:") {
			finding(t, "the probe did not run: %q %s", r.stdout, r.stderr)
		}
		if sum, _ := fileSHA256(imgrun(t)); sum != binSum {
			finding(t, "imgrun's binary on the host changed during the run")
		}
	})

	t.Run("double-fork daemon does not outlive the run", func(t *testing.T) {
		m := marker()
		r := c.run(t, "run", ref, "sh", "-c", `(sh -c "sleep 1000; : `+m+`" &) ; sleep 0.2; exit 0`)
		if r.code != 0 {
			finding(t, "run: exit %d: %s", r.code, r.lastLine())
		}
		time.Sleep(500 * time.Millisecond)
		if p := processesWith(m); len(p) > 0 {
			finding(t, "the daemon survives the run: %v", p)
		}
		// Even when imgrun itself is killed, the daemon dies with the run.
		m = marker()
		wait := c.start(t, 1500*time.Millisecond, "run", ref, "sh", "-c", `(sh -c "sleep 1000; : `+m+`" &) ; sleep 1000`)
		wait()
		time.Sleep(500 * time.Millisecond)
		if p := processesWith(m); len(p) > 0 {
			finding(t, "the daemon survives a killed imgrun: %v", p)
		}
	})
}
