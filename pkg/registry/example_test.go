package registry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/imgrun/imgrun/pkg/registry"
)

func ExampleParseReference() {
	for _, s := range []string{
		"node",
		"user/app:1.0",
		"localhost:5000/team/tool:dev",
		"node:22@sha256:0000000000000000000000000000000000000000000000000000000000000001",
		"Node",
	} {
		ref, err := registry.ParseReference(s)
		if err != nil {
			fmt.Println(err, errors.Is(err, registry.ErrBadReference))
			continue
		}
		fmt.Println(ref, ref.IsDockerHub())
	}
	// Output:
	// index.docker.io/library/node:latest true
	// index.docker.io/user/app:1.0 true
	// localhost:5000/team/tool:dev false
	// index.docker.io/library/node:22@sha256:0000000000000000000000000000000000000000000000000000000000000001 true
	// invalid reference "Node": repository name must be lowercase true
}

// Example resolves an image from an in-process registry on 127.0.0.1 (loopback registries
// are reached over plain HTTP without any flag) and prints what it found.
func Example() {
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	// A fixed image (no layers, fixed config), so its digest is always the same.
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		OS: "linux", Architecture: "amd64",
		RootFS: v1.RootFS{Type: "layers"},
		Config: v1.Config{Cmd: []string{"/hello"}},
	})
	if err != nil {
		log.Fatal(err)
	}
	dst, err := name.ParseReference(host + "/demo/hello:1")
	if err != nil {
		log.Fatal(err)
	}
	if err := remote.Write(dst, img); err != nil {
		log.Fatal(err)
	}

	ref, err := registry.ParseReference(host + "/demo/hello:1")
	if err != nil {
		log.Fatal(err)
	}
	client, err := registry.New()
	if err != nil {
		log.Fatal(err)
	}
	src, err := client.Open(ref)
	if err != nil {
		log.Fatal(err)
	}
	p, _ := registry.ParsePlatform("linux/amd64")
	resolved, err := src.Resolve(context.Background(), p, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resolved.Descriptor.Digest)
	fmt.Println(registry.FormatPlatform(resolved.Platform), resolved.Config.Config.Cmd)
	// Output:
	// sha256:7a4a85b6169e3c5b892e8f332e741705c2846052a537f98a2f1a1fdfa3323b4d
	// linux/amd64 [/hello]
}
