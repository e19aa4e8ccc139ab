package rootfs_test

import (
	"context"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"

	"github.com/imgrun/imgrun/internal/tartest"
	"github.com/imgrun/imgrun/pkg/rootfs"
)

// ExampleFlatten flattens two in-memory layers: the second deletes a file of the first and
// adds one of its own.
func ExampleFlatten() {
	base := memLayer(tartest.Tar(
		tartest.Dir("etc"),
		tartest.File("etc/hostname", "base\n"),
		tartest.File("etc/motd", "deleted above\n"),
	))
	top := memLayer(tartest.Tar(
		tartest.Whiteout("etc/motd"),
		tartest.File("etc/issue", "imgrun\n"),
	))

	tmp, err := os.MkdirTemp("", "example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "rootfs")
	if err := rootfs.Flatten(context.Background(), dir, []rootfs.Layer{base, top}); err != nil {
		log.Fatal(err)
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(dir, p)
		fmt.Println(rel, d.Type().IsDir())
		return err
	})
	// Output:
	// . true
	// etc true
	// etc/hostname false
	// etc/issue false
}
