//go:build chaos

package chaos

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/imgrun/imgrun/internal/testutil"
)

// killedCgroups are the cgroups TestCrash's killed runs left behind.
var killedCgroups struct {
	sync.Mutex
	names []string
}

// TestStaleCgroups: one more run with a limit must remove every cgroup that TestCrash's killed
// runs left (pkg/run decides by each run's lock file, with no time grace).
func TestStaleCgroups(t *testing.T) {
	testutil.RequiresRoot(t)
	killedCgroups.Lock()
	names := killedCgroups.names
	killedCgroups.Unlock()
	if len(names) == 0 {
		t.Skip("no killed run left a cgroup (run TestCrash first, in the same go test)")
	}
	reg := chaosRegistry(t)
	c := cli{root: filepath.Join(t.TempDir(), "root"), insecure: []string{reg.Host}}
	c.must(t, "run", "--pids-limit", "64", reg.Ref("chaos/a:1"), "true")
	if left := cgroupsOf(names); len(left) > 0 {
		finding(t, "%d cgroup dirs of killed runs survive the next run: %v", len(left), left)
	}
	t.Logf("%d cgroups of killed runs were removed by the next run", len(names))
}
