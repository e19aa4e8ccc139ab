// Command embed-run runs a command in a root file system directory with imgrun's launcher:
//
//	embed-run [-t] [-net host] [-memory BYTES] ROOTFS [CMD [ARG...]]
//
// It shows the three things a program embedding pkg/run does: call run.MaybeInit first (the
// launcher re-executes this binary as the container's init), build a Spec, and map Run's
// error to an exit status. It needs root, or unprivileged user namespaces.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/imgrun/imgrun/pkg/run"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func main() {
	run.MaybeInit() // in the container's init this never returns

	network := flag.String("net", "none", "network: none or host")
	memory := flag.Int64("memory", 0, "memory limit in bytes (0: none)")
	tty := flag.Bool("t", false, "allocate a pseudo-terminal")
	flag.Parse()
	if flag.NArg() < 1 {
		fmt.Fprintln(os.Stderr, "usage: embed-run [-t] [-net host] [-memory BYTES] ROOTFS [CMD [ARG...]]")
		os.Exit(2)
	}
	// An image config as an image would carry it; the arguments after ROOTFS replace its Cmd.
	cfg := ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"GREETING=hello"}}
	spec, err := run.SpecFromImage(cfg, run.Overrides{Args: flag.Args()[1:]})
	if err != nil {
		fail(err)
	}
	spec.Rootfs = flag.Arg(0)
	spec.Network = run.Network(*network)
	spec.Limits.MemoryBytes = *memory
	spec.Stdin, spec.TTY = true, *tty
	spec.StateDir = filepath.Join(os.TempDir(), fmt.Sprintf("embed-run-%d", os.Geteuid()))

	err = run.Run(context.Background(), spec, run.Stdio{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr})
	var exit *run.ExitError
	switch {
	case errors.As(err, &exit):
		if exit.Err != nil {
			fmt.Fprintln(os.Stderr, "embed-run:", exit.Err)
		}
		os.Exit(exit.Code)
	case err != nil:
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "embed-run:", err)
	os.Exit(125) // docker's status for "the launcher failed"
}
