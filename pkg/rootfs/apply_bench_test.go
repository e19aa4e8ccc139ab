package rootfs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/imgrun/imgrun/internal/tartest"
)

// benchLayer is a deterministic layer of about 10k entries shaped like a distribution layer:
// 400 directories of 24 small files (1–4 KiB), a symlink and a hard link in each.
func benchLayer() []byte {
	var ents []tartest.Entry
	body := bytes.Repeat([]byte("0123456789abcdef"), 256)
	for d := range 400 {
		dir := fmt.Sprintf("usr/share/pkg%03d/sub%d", d, d%7)
		ents = append(ents, tartest.Dir(dir+"/"))
		for f := range 24 {
			n := 1024 + (d*24+f)%3072
			ents = append(ents, tartest.File(fmt.Sprintf("%s/file%02d", dir, f), string(body[:n])))
		}
		ents = append(ents, tartest.Symlink(dir+"/link", "file00"), tartest.Link(dir+"/hard", dir+"/file01"))
	}
	return tartest.Tar(ents...)
}

// BenchmarkApply applies benchLayer into a fresh directory per iteration, under
// $IMGRUN_BENCH_DIR if set (e.g. /dev/shm, to measure Apply rather than the disk).
func BenchmarkApply(b *testing.B) {
	layer := benchLayer()
	base := b.TempDir()
	if d := os.Getenv("IMGRUN_BENCH_DIR"); d != "" {
		var err error
		if base, err = os.MkdirTemp(d, "bench-apply-"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(base) })
	}
	b.SetBytes(int64(len(layer)))
	i := 0
	for b.Loop() {
		b.StopTimer()
		root := filepath.Join(base, fmt.Sprint(i))
		i++
		if err := os.Mkdir(root, 0o755); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := Apply(b.Context(), root, bytes.NewReader(layer)); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := os.RemoveAll(root); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(400*27), "ns/entry")
}

// BenchmarkApplyTar applies the uncompressed layer tar $IMGRUN_BENCH_TAR (a realistic layer, e.g.
// `tar -cf /tmp/usr.tar -C / usr/share usr/include`) into a fresh directory per iteration, under
// $IMGRUN_BENCH_DIR if set. Compare with `tar -xf` of the same file into the same filesystem.
func BenchmarkApplyTar(b *testing.B) {
	src := os.Getenv("IMGRUN_BENCH_TAR")
	if src == "" {
		b.Skip("IMGRUN_BENCH_TAR not set")
	}
	base := b.TempDir()
	if d := os.Getenv("IMGRUN_BENCH_DIR"); d != "" {
		var err error
		if base, err = os.MkdirTemp(d, "bench-apply-"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(base) })
	}
	fi, err := os.Stat(src)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(fi.Size())
	i := 0
	for b.Loop() {
		b.StopTimer()
		root := filepath.Join(base, fmt.Sprint(i))
		i++
		if err := os.Mkdir(root, 0o755); err != nil {
			b.Fatal(err)
		}
		f, err := os.Open(src)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		err = Apply(b.Context(), root, f)
		b.StopTimer()
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		if err := os.RemoveAll(root); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// TestApplyTarOnce applies $IMGRUN_APPLY_TAR once into the new directory $IMGRUN_APPLY_ROOT and
// leaves it there, so that `strace -f -c` of the test binary counts Apply's syscalls alone
// (compare with `tar -xf` of the same file). Skipped unless both are set.
func TestApplyTarOnce(t *testing.T) {
	src, root := os.Getenv("IMGRUN_APPLY_TAR"), os.Getenv("IMGRUN_APPLY_ROOT")
	if src == "" || root == "" {
		t.Skip("IMGRUN_APPLY_TAR and IMGRUN_APPLY_ROOT not set")
	}
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Apply(t.Context(), root, f); err != nil {
		t.Fatal(err)
	}
}
