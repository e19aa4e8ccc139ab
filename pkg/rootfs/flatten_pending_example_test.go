package rootfs_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/imgrun/imgrun/internal/tartest"
	"github.com/imgrun/imgrun/pkg/rootfs"
)

// ExamplePending starts a Flatten before its layers exist, as imgrun does while a pull still
// downloads them: the layers are handed over as they land, here the top one first, and are
// still applied in order.
func ExamplePending() {
	base := memLayer(tartest.Tar(tartest.Dir("etc"), tartest.File("etc/motd", "base\n")))
	top := memLayer(tartest.Tar(tartest.Dir("etc"), tartest.File("etc/motd", "top\n")))

	tmp, err := os.MkdirTemp("", "example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "rootfs")

	p := rootfs.NewPending(2)
	done := make(chan error, 1)
	go func() { done <- rootfs.Flatten(context.Background(), dir, p.Layers()) }()
	p.Ready(1, top) // e.g. from pkg/layers' PullOptions.LayerReady
	p.Ready(0, base)
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "etc", "motd"))
	fmt.Print(string(b))
	// Output:
	// top
}
