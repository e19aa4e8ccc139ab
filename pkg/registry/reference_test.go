package registry

import (
	"errors"
	"strings"
	"testing"
)

func TestParseReference(t *testing.T) {
	const d = "sha256:0000000000000000000000000000000000000000000000000000000000000001"
	tests := []struct {
		in   string
		want string // String()
		tag  string
	}{
		{"node", "index.docker.io/library/node:latest", "latest"},
		{"node:22", "index.docker.io/library/node:22", "22"},
		{"docker.io/node", "index.docker.io/library/node:latest", "latest"},
		{"docker.io/library/node:22", "index.docker.io/library/node:22", "22"},
		{"index.docker.io/library/node", "index.docker.io/library/node:latest", "latest"},
		{"user/app", "index.docker.io/user/app:latest", "latest"},
		{"localhost/app", "localhost/app:latest", "latest"},
		{"localhost:5000/a/b:tag", "localhost:5000/a/b:tag", "tag"},
		{"127.0.0.1:5000/a/b:v1.2-rc_3", "127.0.0.1:5000/a/b:v1.2-rc_3", "v1.2-rc_3"},
		{"ghcr.io/org/x__y.z-w", "ghcr.io/org/x__y.z-w:latest", "latest"},
		{"[::1]:5000/app", "[::1]:5000/app:latest", "latest"},
		{"node@" + d, "index.docker.io/library/node@" + d, ""},
		{"node:22@" + d, "index.docker.io/library/node:22@" + d, "22"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := ParseReference(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			if r.Tag != tt.tag {
				t.Errorf("Tag = %q, want %q", r.Tag, tt.tag)
			}
			if r2, err := ParseReference(r.String()); err != nil || r2 != r {
				t.Errorf("round trip: %+v, %v; want %+v", r2, err, r)
			}
		})
	}
}

func TestParseReferenceBad(t *testing.T) {
	for _, in := range []string{
		"", "Node", "library/Node:1", "node:", "node:-x", "node:a/b", "node@sha256:abc", "node@md5:0000",
		"node@", "@sha256:0000000000000000000000000000000000000000000000000000000000000001",
		"a//b", "/node", "node/", "-node", "node-", "a..b", "a.-b", "http://host/x", "node latest",
		" node", "node:" + string(make([]byte, 0)) + "t\n", "host:port:bad/x", "oci:", "docker-archive:",
		"node@sha256:0000000000000000000000000000000000000000000000000000000000000001@sha256:0000000000000000000000000000000000000000000000000000000000000001",
		"node:" + longTag(),
		// 248 characters, but library/ makes the normalized repository 256: refused, so
		// that every accepted reference's String() parses back (found by fuzzing).
		strings.Repeat("0", 248),
	} {
		t.Run(in, func(t *testing.T) {
			r, err := ParseReference(in)
			if !errors.Is(err, ErrBadReference) {
				t.Fatalf("ParseReference(%q) = %+v, %v; want ErrBadReference", in, r, err)
			}
		})
	}
}

func longTag() string {
	b := make([]byte, 129)
	for i := range b {
		b[i] = 'a'
	}
	return string(b)
}

func TestParseReferenceTransports(t *testing.T) {
	tests := []struct {
		in, path, tag string
		tr            Transport
	}{
		{"oci:/tmp/layout", "/tmp/layout", "", TransportOCI},
		{"oci:/tmp/layout:v1", "/tmp/layout", "v1", TransportOCI},
		{"oci:/tmp/layout:index.docker.io/library/node:22", "/tmp/layout", "index.docker.io/library/node:22", TransportOCI},
		{"docker-archive:/tmp/img.tar", "/tmp/img.tar", "", TransportDockerArchive},
	}
	for _, tt := range tests {
		r, err := ParseReference(tt.in)
		if err != nil {
			t.Fatalf("%s: %v", tt.in, err)
		}
		if r.Transport != tt.tr || r.Path != tt.path || r.Tag != tt.tag {
			t.Errorf("%s: got %+v", tt.in, r)
		}
		if r.String() != tt.in {
			t.Errorf("%s: String() = %q", tt.in, r.String())
		}
	}
}

func TestParsePlatform(t *testing.T) {
	tests := []struct{ in, want string }{
		{"linux/amd64", "linux/amd64"},
		{"linux/arm64", "linux/arm64"},
		{"linux/arm64/v8", "linux/arm64"},
		{"linux/aarch64", "linux/arm64"},
		{"linux/x86_64", "linux/amd64"},
		{"linux/arm", "linux/arm/v7"},
		{"linux/arm/v6", "linux/arm/v6"},
		{"Linux/AMD64", "linux/amd64"},
	}
	for _, tt := range tests {
		p, err := ParsePlatform(tt.in)
		if err != nil {
			t.Fatalf("%s: %v", tt.in, err)
		}
		if got := FormatPlatform(p); got != tt.want {
			t.Errorf("ParsePlatform(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
	for _, bad := range []string{"", "linux", "linux/", "/amd64", "linux/amd64/v1/x"} {
		if _, err := ParsePlatform(bad); !errors.Is(err, ErrBadReference) {
			t.Errorf("ParsePlatform(%q) err = %v, want ErrBadReference", bad, err)
		}
	}
}
