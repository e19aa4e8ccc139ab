package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/imgrun/imgrun/internal/progress"
	"github.com/imgrun/imgrun/internal/testreg"
	"github.com/imgrun/imgrun/pkg/run"
)

// result is what one in-process imgrun invocation did.
type result struct {
	code           int
	stdout, stderr string
}

// imgrun runs Main in-process with the given cache root.
func imgrun(t *testing.T, root string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	full := append([]string{"--root", root}, args...)
	code := Main(t.Context(), full, strings.NewReader(""), &stdout, &stderr)
	t.Logf("imgrun %s → %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return result{code, stdout.String(), stderr.String()}
}

// lines splits output into its non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// wantOneErrorLine checks the failure contract: a non-zero code and exactly one stderr line
// starting with "imgrun: ".
func wantOneErrorLine(t *testing.T, r result, code int) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit code = %d, want %d", r.code, code)
	}
	ls := lines(r.stderr)
	if len(ls) != 1 || !strings.HasPrefix(ls[0], "imgrun: ") {
		t.Errorf("stderr = %q, want one line starting with \"imgrun: \"", r.stderr)
	}
}

// testRegistry serves one two-layer image at library/app:1.
func testRegistry(t *testing.T) (*testreg.Registry, string) {
	t.Helper()
	reg := testreg.New(t)
	img := testreg.Image(t, "linux/amd64",
		testreg.Layer(t, testreg.File{Name: "etc/"}, testreg.File{Name: "etc/hello", Body: "hello"}),
		testreg.Layer(t, testreg.File{Name: "bin/"}, testreg.File{Name: "bin/tool", Body: strings.Repeat("x", 4096), Mode: 0o755}),
	)
	reg.Push(t, "library/app:1", img)
	return reg, reg.Ref("library/app:1")
}

func TestPullPrintsPinnedReference(t *testing.T) {
	reg, ref := testRegistry(t)
	root := t.TempDir()
	r := imgrun(t, root, "--progress=plain", "pull", "--platform", "linux/amd64", ref)
	if r.code != 0 {
		t.Fatalf("pull failed: %d %s", r.code, r.stderr)
	}
	out := lines(r.stdout)
	want := reg.Host + "/library/app@sha256:"
	if len(out) != 1 || !strings.HasPrefix(out[0], want) || len(out[0]) != len(want)+64 {
		t.Errorf("stdout = %q, want exactly one line %s<64 hex>", r.stdout, want)
	}
	if !strings.Contains(r.stderr, "done") {
		t.Errorf("plain progress on stderr lacks layer completion lines: %q", r.stderr)
	}

	// The pinned reference works as a reference, from the cache, without the network.
	blobs := reg.Counter.Count("GET", testreg.KindBlob)
	r = imgrun(t, root, "-q", "pull", out[0])
	if r.code != 0 || strings.TrimSpace(r.stdout) != out[0] {
		t.Errorf("pull of the pinned reference: code %d, stdout %q, want %q", r.code, r.stdout, out[0])
	}
	if got := reg.Counter.Count("GET", testreg.KindBlob); got != blobs {
		t.Errorf("second pull sent %d blob GETs, want none", got-blobs)
	}
}

func TestPullProgressJSON(t *testing.T) {
	_, ref := testRegistry(t)
	r := imgrun(t, t.TempDir(), "--progress=json", "pull", ref)
	if r.code != 0 {
		t.Fatalf("pull failed: %d %s", r.code, r.stderr)
	}
	if len(lines(r.stdout)) != 1 {
		t.Errorf("stdout = %q, want only the pinned reference", r.stdout)
	}
	kinds := map[progress.Kind]int{}
	sc := bufio.NewScanner(strings.NewReader(r.stderr))
	for sc.Scan() {
		var l progress.Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("stderr line %q is not JSON: %v", sc.Text(), err)
		}
		kinds[l.Event]++
	}
	if kinds[progress.Start] != 2 || kinds[progress.Done] != 2 {
		t.Errorf("JSON events %v, want 2 starts and 2 dones (one per layer)", kinds)
	}
}

func TestPullQuiet(t *testing.T) {
	_, ref := testRegistry(t)
	for _, flag := range []string{"-q", "--quiet", "--progress=quiet"} {
		r := imgrun(t, t.TempDir(), flag, "pull", ref)
		if r.code != 0 || r.stderr != "" || len(lines(r.stdout)) != 1 {
			t.Errorf("pull %s: code %d, stderr %q, stdout %q; want 0, nothing, one line", flag, r.code, r.stderr, r.stdout)
		}
	}
}

func TestImagesInspectRmiGC(t *testing.T) {
	reg, ref := testRegistry(t)
	root := t.TempDir()
	if r := imgrun(t, root, "-q", "pull", ref); r.code != 0 {
		t.Fatalf("pull failed: %s", r.stderr)
	}

	r := imgrun(t, root, "images")
	if r.code != 0 || len(lines(r.stdout)) != 2 || !strings.Contains(r.stdout, ref) || !strings.Contains(r.stdout, "linux/amd64") {
		t.Errorf("images: code %d, stdout %q; want a header and a line for %s", r.code, r.stdout, ref)
	}
	r = imgrun(t, root, "images", "--json")
	var rows []imageRow
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil || len(rows) != 1 {
		t.Fatalf("images --json: %v, %q", err, r.stdout)
	}
	if rows[0].Reference != ref || rows[0].Platform != "linux/amd64" || rows[0].Size <= 0 || !strings.HasPrefix(rows[0].Digest, "sha256:") {
		t.Errorf("images --json row = %+v", rows[0])
	}

	// inspect reads the cache: no registry request at all.
	before := len(reg.Counter.Requests())
	r = imgrun(t, root, "inspect", ref)
	var cfg struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &cfg); err != nil || cfg.OS != "linux" || cfg.Architecture != "amd64" {
		t.Errorf("inspect: %v, config %+v", err, cfg)
	}
	r = imgrun(t, root, "inspect", "--manifest", ref)
	var m struct {
		Layers []json.RawMessage `json:"layers"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil || len(m.Layers) != 2 {
		t.Errorf("inspect --manifest: %v, %d layers", err, len(m.Layers))
	}
	if n := len(reg.Counter.Requests()) - before; n != 0 {
		t.Errorf("inspect of a cached image sent %d registry requests, want 0", n)
	}

	r = imgrun(t, root, "rmi", ref)
	if r.code != 0 {
		t.Errorf("rmi failed: %s", r.stderr)
	}
	if r := imgrun(t, root, "images", "--json"); strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("images after rmi = %q, want []", r.stdout)
	}
	wantOneErrorLine(t, imgrun(t, root, "rmi", ref), exitFailed)

	// Not cached any more: inspect asks the registry, without pulling layers.
	blobs := reg.Counter.Count("GET", testreg.KindBlob)
	r = imgrun(t, root, "inspect", ref)
	if r.code != 0 || !json.Valid([]byte(r.stdout)) {
		t.Errorf("remote inspect: code %d, stdout %q", r.code, r.stdout)
	}
	if got := reg.Counter.Count("GET", testreg.KindBlob); got != blobs {
		t.Errorf("remote inspect sent %d blob GETs, want 0 (configs come from the cache or the manifest path)", got-blobs)
	}
}

func TestBadInput(t *testing.T) {
	reg, _ := testRegistry(t)
	root := t.TempDir()
	tests := []struct {
		name string
		args []string
	}{
		{"malformed reference", []string{"pull", "UPPER/Case:tag"}},
		{"malformed reference, shorthand", []string{"Not A Ref"}},
		{"unknown image", []string{"pull", reg.Ref("library/nosuch:1")}},
		{"unknown tag", []string{"pull", reg.Ref("library/app:2")}},
		{"unknown platform", []string{"pull", "--platform", "linux/s390x", reg.Ref("library/app:1")}},
		{"bad platform", []string{"pull", "--platform", "linux", reg.Ref("library/app:1")}},
		{"bad progress mode", []string{"--progress=fancy", "pull", reg.Ref("library/app:1")}},
		{"unknown flag", []string{"pull", "--bogus", reg.Ref("library/app:1")}},
		{"missing argument", []string{"pull"}},
		{"rmi of an image never pulled", []string{"rmi", reg.Ref("library/app:1")}},
		{"inspect of an unknown image", []string{"inspect", reg.Ref("library/nosuch:1")}},
		{"bad mirror", []string{"--mirror", "ftp://127.0.0.1:1", "pull", reg.Ref("library/app:1")}},
		{"bad --jobs", []string{"pull", "--jobs", "-1", reg.Ref("library/app:1")}},
		{"export without -o", []string{"export", reg.Ref("library/app:1")}},
		{"unpack with a bad --pull", []string{"unpack", "--pull", "sometimes", reg.Ref("library/app:1"), t.TempDir()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantOneErrorLine(t, imgrun(t, root, tt.args...), exitFailed)
		})
	}
	// Nothing was recorded for any of them.
	if r := imgrun(t, root, "images", "--json"); strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("images after failures = %q, want []", r.stdout)
	}
}

func TestDefaultRoot(t *testing.T) {
	t.Setenv("IMGRUN_ROOT", "/from/env")
	if got := defaultRoot(); got != "/from/env" {
		t.Errorf("defaultRoot with IMGRUN_ROOT = %q", got)
	}
	t.Setenv("IMGRUN_ROOT", "")
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	want := "/xdg/imgrun"
	if os.Geteuid() == 0 {
		want = "/var/lib/imgrun"
	}
	if got := defaultRoot(); got != want {
		t.Errorf("defaultRoot = %q, want %q", got, want)
	}
}

func TestMirrorsFromEnv(t *testing.T) {
	t.Setenv("IMGRUN_MIRRORS", "http://127.0.0.1:1, http://127.0.0.1:2")
	a := &app{stderr: &bytes.Buffer{}, progress: "auto"}
	if err := a.setup(); err != nil {
		t.Fatal(err)
	}
	if len(a.mirrors) != 2 || a.mirrors[1] != "http://127.0.0.1:2" {
		t.Errorf("mirrors = %q", a.mirrors)
	}
}

// TestMain lets the test binary serve as a run's init, as imgrun's own binary does.
func TestMain(m *testing.M) {
	run.MaybeInit()
	os.Exit(m.Run())
}

// TestPullPlatformFromIndex pulls one platform of a multi-platform index: the pinned
// reference and --platform then find it in the cache, with no request at all.
func TestPullPlatformFromIndex(t *testing.T) {
	reg := testreg.New(t)
	amd := testreg.Image(t, "linux/amd64", testreg.Layer(t, testreg.File{Name: "arch", Body: "amd64"}))
	arm := testreg.Image(t, "linux/arm64/v8", testreg.Layer(t, testreg.File{Name: "arch", Body: "arm64"}))
	reg.PushIndex(t, "library/multi:1", testreg.WithAttestation(t, testreg.Index(t, amd, arm), amd))
	ref := reg.Ref("library/multi:1")
	root := t.TempDir()

	r := imgrun(t, root, "-q", "pull", "--platform", "linux/arm64", ref)
	if r.code != 0 {
		t.Fatalf("pull: %s", r.stderr)
	}
	pinnedRef := strings.TrimSpace(r.stdout)

	before := len(reg.Counter.Requests())
	for _, args := range [][]string{
		{"inspect", "--platform", "linux/arm64/v8", ref},
		{"inspect", "--platform", "linux/arm64", pinnedRef},
	} {
		r := imgrun(t, root, args...)
		var cfg struct {
			Architecture string `json:"architecture"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &cfg); err != nil || cfg.Architecture != "arm64" {
			t.Errorf("%q: architecture %q, %v", args, cfg.Architecture, err)
		}
	}
	if n := len(reg.Counter.Requests()) - before; n != 0 {
		t.Errorf("inspect of the cached platform sent %d requests, want 0", n)
	}
	r = imgrun(t, root, "images", "--json")
	var rows []imageRow
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil || len(rows) != 1 || rows[0].Platform != "linux/arm64" {
		t.Errorf("images --json = %q, %v; want one linux/arm64 row", r.stdout, err)
	}
}

// TestStallTimeoutFlag: --stall-timeout (or IMGRUN_STALL_TIMEOUT) bounds how long a pull
// waits on a registry that stops sending bytes; it then fails with one line and retries
// nothing trusted from the stalled blob.
func TestStallTimeoutFlag(t *testing.T) {
	img := testreg.Image(t, "linux/amd64",
		testreg.Layer(t, testreg.File{Name: "big", Body: strings.Repeat("y", 64<<10)}))
	reg := testreg.New(t, testreg.WithFaults(testreg.Fault{Method: "GET", Kind: testreg.KindBlob, Action: testreg.StallAfter(100)}))
	reg.Push(t, "library/stall:1", img)
	root := t.TempDir()

	start := time.Now()
	r := imgrun(t, root, "-q", "--stall-timeout", "500ms", "pull", reg.Ref("library/stall:1"))
	wantOneErrorLine(t, r, 125)
	if !strings.Contains(r.stderr, "stall") && !strings.Contains(r.stderr, "no data") {
		t.Errorf("stderr = %q, want it to say the transfer stalled", r.stderr)
	}
	// Generous bound: the default stall timeout is 30 s, and retries of a 0.5 s stall
	// must stay far below it.
	if d := time.Since(start); d > 25*time.Second {
		t.Errorf("pull took %s with --stall-timeout 500ms", d)
	}

	t.Setenv("IMGRUN_STALL_TIMEOUT", "bogus")
	wantOneErrorLine(t, imgrun(t, root, "images"), 125)
}
