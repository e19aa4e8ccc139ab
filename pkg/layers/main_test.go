package layers

import (
	"fmt"
	"os"
	"testing"
)

// childEnv selects a child role when the test binary re-executes itself (as moby/sys
// reexec does): the multi-process tests run real imgrun-store code in other processes.
const childEnv = "IMGRUN_LAYERS_TEST_CHILD"

var children = map[string]func() error{}

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		fn, ok := children[role]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown child role %q\n", role)
			os.Exit(2)
		}
		if err := fn(); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
