// Command imgrun pulls, unpacks, exports and runs container images without a daemon.
// Everything it does is in pkg/; this is flag parsing and printing (see Main).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/imgrun/imgrun/pkg/run"
)

func main() {
	// In the process pkg/run starts as a container's init, this sets it up and never returns.
	run.MaybeInit()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
