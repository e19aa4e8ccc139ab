package rootfs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log"

	"github.com/imgrun/imgrun/internal/tartest"
	"github.com/imgrun/imgrun/pkg/rootfs"
)

// ExampleExport streams the flattened tree of two in-memory layers as one tar: the whiteout
// hides the lower file, the hard link to a lower layer's file follows its target, and the
// same layers always give the same bytes.
func ExampleExport() {
	base := memLayer(tartest.Tar(
		tartest.Dir("bin"),
		tartest.File("bin/busybox", "#!busybox\n", tartest.Mode(0o755)),
		tartest.File("bin/old", "deleted above\n"),
	))
	top := memLayer(tartest.Tar(
		tartest.Whiteout("bin/old"),
		tartest.Link("bin/sh", "bin/busybox"),
	))

	var buf bytes.Buffer
	if err := rootfs.Export(context.Background(), &buf, []rootfs.Layer{base, top}); err != nil {
		log.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(buf.Bytes()))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%c %s", h.Typeflag, h.Name)
		if h.Linkname != "" {
			fmt.Printf(" -> %s", h.Linkname)
		}
		fmt.Println()
	}
	fmt.Printf("sha256:%x\n", sha256.Sum256(buf.Bytes()))
	// Output:
	// 5 bin/
	// 0 bin/busybox
	// 1 bin/sh -> bin/busybox
	// sha256:d88e1eb44d89d12d8cb015e6f133d392da55d0fcb0b5e21280ceb5117ac826d2
}
