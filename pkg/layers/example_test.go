package layers_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgrun/imgrun/pkg/layers"
	"github.com/imgrun/imgrun/pkg/registry"
)

// demoTar is a small, byte-for-byte deterministic layer.
func demoTar(files map[string]string, order ...string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range order {
		body := files[name]
		hdr := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}
		if strings.HasSuffix(name, "/") {
			hdr = &tar.Header{Name: name, Mode: 0o755, Typeflag: tar.TypeDir}
		}
		tw.WriteHeader(hdr)
		io.WriteString(tw, body)
	}
	tw.Close()
	return buf.Bytes()
}

// startDemoRegistry serves an in-process registry on 127.0.0.1 holding demo:1, a two-layer
// linux/amd64 image with uncompressed OCI layers.
func startDemoRegistry() (host string, stop func()) {
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	host = strings.TrimPrefix(srv.URL, "http://")
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.ConfigFile(img, &v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers"}})
	if err != nil {
		log.Fatal(err)
	}
	for _, tarBytes := range [][]byte{
		demoTar(map[string]string{"etc/": "", "etc/os-release": "ID=demo\n"}, "etc/", "etc/os-release"),
		demoTar(map[string]string{"bin/": "", "bin/hello": "#!/bin/sh\necho hello\n"}, "bin/", "bin/hello"),
	} {
		img, err = mutate.Append(img, mutate.Addendum{Layer: static.NewLayer(tarBytes, types.OCIUncompressedLayer)})
		if err != nil {
			log.Fatal(err)
		}
	}
	ref, err := name.ParseReference(host + "/demo:1")
	if err != nil {
		log.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		log.Fatal(err)
	}
	return host, srv.Close
}

// Example pulls an image from a registry into a store and prints its layers.
func Example() {
	ctx := context.Background()
	host, stop := startDemoRegistry()
	defer stop()
	root, _ := os.MkdirTemp("", "imgrun-example-")
	defer os.RemoveAll(root)

	store, err := layers.Open(root)
	if err != nil {
		log.Fatal(err)
	}
	client, err := registry.New(registry.WithKeychain(authn.NewMultiKeychain()))
	if err != nil {
		log.Fatal(err)
	}
	ref, err := registry.ParseReference(host + "/demo:1")
	if err != nil {
		log.Fatal(err)
	}
	src, err := client.Open(ref)
	if err != nil {
		log.Fatal(err)
	}
	img, err := store.Pull(ctx, src, layers.PullOptions{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}})
	if err != nil {
		log.Fatal(err)
	}
	for _, l := range img.Layers() {
		fmt.Println(l.Descriptor.Digest, l.Descriptor.Size)
	}
	// Output:
	// sha256:6cdee5cab2b9cec6f0a86067dc5efc21aa40b2104eb18e163ccd5f036fbc2f5c 2560
	// sha256:0da52e0481763cbfac5a1fd141081767e919fc63293cb8bc64026fa3ba6f6049 2560
}

// ExampleLayer_Uncompressed lists the entries of each layer of a cached image, found by
// Lookup and Load without any network request.
func ExampleLayer_Uncompressed() {
	ctx := context.Background()
	host, stop := startDemoRegistry()
	defer stop()
	root, _ := os.MkdirTemp("", "imgrun-example-")
	defer os.RemoveAll(root)
	store, _ := layers.Open(root)
	client, _ := registry.New(registry.WithKeychain(authn.NewMultiKeychain()))
	ref, _ := registry.ParseReference(host + "/demo:1")
	src, _ := client.Open(ref)
	amd64 := ocispec.Platform{OS: "linux", Architecture: "amd64"}
	if _, err := store.Pull(ctx, src, layers.PullOptions{Platform: amd64}); err != nil {
		log.Fatal(err)
	}

	rec, err := store.Lookup(ctx, ref, amd64) // from index.json only
	if err != nil {
		log.Fatal(err)
	}
	img, err := store.Load(ctx, rec)
	if err != nil {
		log.Fatal(err)
	}
	for i, l := range img.Layers() {
		rc, err := l.Uncompressed(ctx)
		if err != nil {
			log.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			hdr, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				log.Fatal(err)
			}
			fmt.Printf("layer %d: %s\n", i, hdr.Name)
		}
		// Close reads the tar's trailing padding and reports whether the layer verified.
		if err := rc.Close(); err != nil {
			log.Fatal(err)
		}
	}
	// Output:
	// layer 0: etc/
	// layer 0: etc/os-release
	// layer 1: bin/
	// layer 1: bin/hello
}
