package rootfs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"

	"github.com/imgrun/imgrun/pkg/rootfs"
)

// layer builds a small uncompressed layer tar.
func layer(entries ...*tar.Header) *bytes.Reader {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		body := []byte(h.Linkname)
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
			h.Linkname = ""
		}
		if err := tw.WriteHeader(h); err != nil {
			log.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(body)
		}
	}
	tw.Close()
	return bytes.NewReader(buf.Bytes())
}

// Apply two layers: the second deletes a file and a directory of the first with whiteouts,
// makes /etc opaque and adds its own files.
func ExampleApply() {
	root, err := os.MkdirTemp("", "rootfs-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)

	file := func(name, content string) *tar.Header {
		// For brevity the content travels in Linkname; layer() moves it into the body.
		return &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Linkname: content}
	}
	dir := func(name string) *tar.Header { return &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755} }
	symlink := func(name, target string) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target}
	}

	lower := layer(
		dir("etc/"), file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"), file("etc/secret", "s3cret"),
		dir("tmp/"), file("tmp/build.log", "..."), dir("bin/"), file("bin/sh", "#!"), dir("opt/"), file("opt/tool", "x"),
		symlink("usr/bin", "/bin"),
	)
	upper := layer(
		file("tmp/.wh.build.log", ""), file(".wh.opt", ""), // whiteouts
		file("etc/.wh..wh..opq", ""), file("etc/hostname", "box\n"), // opaque /etc
		file("usr/bin/env", "#!"), // lands in /bin: the symlink resolves inside the root
	)
	ctx := context.Background()
	for _, l := range []*bytes.Reader{lower, upper} {
		if err := rootfs.Apply(ctx, root, l); err != nil {
			log.Fatal(err)
		}
	}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel != "." {
			fmt.Println(rel)
		}
		return nil
	})
	// Output:
	// bin
	// bin/env
	// bin/sh
	// etc
	// etc/hostname
	// tmp
	// usr
	// usr/bin
}
