package run_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/imgrun/imgrun/pkg/run"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// This example only compiles: running it needs root (or unprivileged user namespaces) and a
// root file system at /var/lib/imgrun/rootfs/example. A program that calls Run must call
// run.MaybeInit first thing in main.
func ExampleRun() {
	cfg := ocispec.ImageConfig{ // as an image's config carries it
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
		Entrypoint: []string{"/bin/sh", "-c"},
		Cmd:        []string{"echo hello from $(hostname)"},
	}
	spec, err := run.SpecFromImage(cfg, run.Overrides{Env: []string{"GREETING=hi"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	spec.Rootfs = "/var/lib/imgrun/rootfs/example"
	spec.StateDir = "/var/lib/imgrun/runs"
	spec.Hostname = "example"
	spec.Limits = run.Limits{MemoryBytes: 64 << 20, PidsLimit: 100}

	err = run.Run(context.Background(), spec, run.Stdio{Stdout: os.Stdout, Stderr: os.Stderr})
	var exit *run.ExitError
	if errors.As(err, &exit) {
		fmt.Println("exit status", exit.Code)
	} else if err != nil {
		fmt.Println("run:", err)
	}
}

func ExampleSpecFromImage() {
	entrypoint := "/bin/sh"
	spec, err := run.SpecFromImage(ocispec.ImageConfig{
		Env:        []string{"NODE_VERSION=22"},
		Entrypoint: []string{"docker-entrypoint.sh"},
		Cmd:        []string{"node"},
		WorkingDir: "/app",
	}, run.Overrides{
		Entrypoint: &entrypoint, // --entrypoint /bin/sh: drops the image's Cmd too
		Args:       []string{"-c", "node -v"},
		Env:        []string{"NODE_ENV=production"},
		User:       "node",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%q\n%q\n%s %s\n", spec.Args, spec.Env, spec.Dir, spec.User)
	// Output:
	// ["/bin/sh" "-c" "node -v"]
	// ["NODE_VERSION=22" "NODE_ENV=production" "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
	// /app node
}
