package run

import (
	"os"
	"testing"
)

// The test binary is also the launcher's init: Run re-executes it in the run's namespaces.
func TestMain(m *testing.M) {
	MaybeInit()
	code := m.Run()
	cleanupTestRootfs()
	os.Exit(code)
}
