package run

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestSpecFromImage(t *testing.T) {
	host := map[string]string{"HOSTVAR": "fromhost"}
	lookup := func(k string) (string, bool) { v, ok := host[k]; return v, ok }
	str := func(s string) *string { return &s }
	node := ocispec.ImageConfig{
		Env:        []string{"PATH=/usr/local/bin:/usr/bin", "NODE_VERSION=22", "YARN=1"},
		Entrypoint: []string{"docker-entrypoint.sh"},
		Cmd:        []string{"node"},
		WorkingDir: "/app",
		User:       "node",
	}
	tests := []struct {
		name string
		cfg  ocispec.ImageConfig
		o    Overrides
		want Spec
		err  error
		fail bool // any error
	}{
		{name: "image as is", cfg: node, want: Spec{
			Args: []string{"docker-entrypoint.sh", "node"},
			Env:  []string{"PATH=/usr/local/bin:/usr/bin", "NODE_VERSION=22", "YARN=1"},
			Dir:  "/app", User: "node"}},
		{name: "args replace cmd", cfg: node, o: Overrides{Args: []string{"node", "-v"}}, want: Spec{
			Args: []string{"docker-entrypoint.sh", "node", "-v"}, Env: node.Env, Dir: "/app", User: "node"}},
		{name: "entrypoint replaces entrypoint and clears cmd", cfg: node, o: Overrides{Entrypoint: str("/bin/sh")}, want: Spec{
			Args: []string{"/bin/sh"}, Env: node.Env, Dir: "/app", User: "node"}},
		{name: "entrypoint with args", cfg: node, o: Overrides{Entrypoint: str("/bin/sh"), Args: []string{"-c", "id"}}, want: Spec{
			Args: []string{"/bin/sh", "-c", "id"}, Env: node.Env, Dir: "/app", User: "node"}},
		{name: "empty entrypoint clears it", cfg: node, o: Overrides{Entrypoint: str(""), Args: []string{"ls"}}, want: Spec{
			Args: []string{"ls"}, Env: node.Env, Dir: "/app", User: "node"}},
		{name: "env order: image, env file, -e; later wins in place", cfg: node,
			o: Overrides{EnvFile: []string{"YARN=2", "A=file"}, Env: []string{"A=flag", "NODE_VERSION=20", "HOSTVAR", "MISSING"}, LookupEnv: lookup},
			want: Spec{Args: []string{"docker-entrypoint.sh", "node"},
				Env: []string{"PATH=/usr/local/bin:/usr/bin", "NODE_VERSION=20", "YARN=2", "A=flag", "HOSTVAR=fromhost"},
				Dir: "/app", User: "node"}},
		{name: "-w and -u override", cfg: node, o: Overrides{Dir: "/srv/", User: "1000:1000"}, want: Spec{
			Args: []string{"docker-entrypoint.sh", "node"}, Env: node.Env, Dir: "/srv", User: "1000:1000"}},
		{name: "defaults: PATH, / and root", cfg: ocispec.ImageConfig{Cmd: []string{"sh"}}, want: Spec{
			Args: []string{"sh"}, Env: []string{"PATH=" + DefaultPath}, Dir: "/"}},
		{name: "-e PATH replaces the default", cfg: ocispec.ImageConfig{Cmd: []string{"sh"}}, o: Overrides{Env: []string{"PATH=/x"}},
			want: Spec{Args: []string{"sh"}, Env: []string{"PATH=/x"}, Dir: "/"}},
		{name: "no command", cfg: ocispec.ImageConfig{Env: []string{"A=1"}}, err: ErrNoCommand},
		{name: "entrypoint cleared, no args", cfg: node, o: Overrides{Entrypoint: str("")}, err: ErrNoCommand},
		{name: "relative working dir", cfg: node, o: Overrides{Dir: "app"}, err: ErrBadSpec},
		{name: "empty env key", cfg: node, o: Overrides{Env: []string{"=x"}}, fail: true},
		{name: "KEY alone in the image", cfg: ocispec.ImageConfig{Cmd: []string{"sh"}, Env: []string{"A"}}, fail: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SpecFromImage(tc.cfg, tc.o)
			if tc.fail {
				if err == nil {
					t.Fatalf("no error, got %+v", got)
				}
				return
			}
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseEnvFile(t *testing.T) {
	in := "\ufeff# comment\n\nA=1\n  B=two words\nC\nD=\nE=with=equals\n"
	got, err := ParseEnvFile(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"A=1", "B=two words", "C", "D=", "E=with=equals"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for _, bad := range []string{"BAD KEY=1\n", "=1\n"} {
		if _, err := ParseEnvFile(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseMount(t *testing.T) {
	tests := []struct {
		in   string
		want Mount
		ok   bool
	}{
		{"/host:/c", Mount{Source: "/host", Target: "/c"}, true},
		{"/host:/c:ro", Mount{Source: "/host", Target: "/c", ReadOnly: true}, true},
		{"/host:/c:rw", Mount{Source: "/host", Target: "/c"}, true},
		{"vol:/c", Mount{}, false},
		{"/host:c", Mount{}, false},
		{"/host:/", Mount{}, false},
		{"/host:/c:z", Mount{}, false},
		{"/host", Mount{}, false},
	}
	for _, tc := range tests {
		got, err := ParseMount(tc.in)
		if tc.ok != (err == nil) || got != tc.want {
			t.Errorf("ParseMount(%q) = %+v, %v", tc.in, got, err)
		}
		if err != nil && !errors.Is(err, ErrBadMount) {
			t.Errorf("ParseMount(%q): %v is not ErrBadMount", tc.in, err)
		}
	}
}
