package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run on CI (CI=true). There every prerequisite must be
// present, so a missing one fails the test instead of skipping it.
func InCI() bool { return os.Getenv("CI") == "true" }

// SkipOrFail skips t with the given reason, or fails it when running on CI.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true, cannot skip: "+format, args...)
	}
	t.Skipf(format, args...)
}

// RequiresRoot skips t unless the process runs as root (effective uid 0).
func RequiresRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("requires root (euid is %d)", os.Geteuid())
	}
}

// MustBin returns the path of the named executable from PATH (or an absolute path).
// When it is missing the test is skipped, or failed on CI, naming the Debian package
// scripts/test.sh installs for it.
func MustBin(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		SkipOrFail(t, "%s not found (run scripts/test.sh as root to install test dependencies): %v", name, err)
	}
	return p
}
