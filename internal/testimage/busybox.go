package testimage

import (
	"archive/tar"
	"os"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/imgrun/imgrun/internal/testutil"
)

// BusyboxPath is where Debian's busybox-static package installs its static binary.
const BusyboxPath = "/bin/busybox"

// BusyboxApplets are the commands the busybox image links to /bin/busybox.
var BusyboxApplets = []string{
	"cat", "dd", "echo", "env", "false", "head", "hostname", "id", "ls", "mkdir", "mount",
	"ps", "pwd", "rm", "sh", "sleep", "touch", "true", "wc", "yes",
}

// Users of the busybox image's /etc/passwd and /etc/group.
const (
	AppUID     = 1000 // user "app", primary group "app" (1000)
	AppGID     = 1000
	ExtraGID   = 2000 // group "extra": a supplementary group of "app"
	NobodyUID  = 65534
	NogroupGID = 65534
)

const busyboxPasswd = `root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
`

const busyboxGroup = `root:x:0:
app:x:1000:
extra:x:2000:app
nogroup:x:65534:
`

// BusyboxEntries returns the entries of the busybox image's single layer: /bin/busybox
// from the busybox-static package with symlinks for BusyboxApplets, /etc/passwd and
// /etc/group (root, app 1000 with supplementary group extra 2000, nobody 65534), /tmp
// (1777), /root, /home/app (owned by app) and empty /dev, /proc, /sys mount points.
func BusyboxEntries(t testing.TB) []Entry {
	t.Helper()
	bb := testutil.MustBin(t, BusyboxPath)
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatalf("busybox image: %v", err)
	}
	es := []Entry{
		Dir("bin"),
		{Name: "bin/busybox", Type: tar.TypeReg, Mode: 0o755, Data: data},
	}
	for _, a := range BusyboxApplets {
		es = append(es, Symlink("bin/"+a, "busybox"))
	}
	es = append(es,
		Dir("dev"),
		Dir("etc"),
		File("etc/group", busyboxGroup),
		File("etc/passwd", busyboxPasswd),
		Dir("home"),
		Dir("home/app").WithOwner(AppUID, AppGID),
		Dir("proc"),
		Dir("root").WithMode(0o700),
		Dir("sys"),
		Dir("tmp").WithMode(0o1777),
		Dir("usr"),
		Dir("usr/bin"),
	)
	return es
}

// Busybox returns a one-layer OCI image holding BusyboxEntries, with Env PATH and Cmd sh.
func Busybox(t testing.TB) v1.Image {
	t.Helper()
	cfg := v1.Config{Env: []string{"PATH=" + DefaultPath}, Cmd: []string{"sh"}}
	return Image(t, cfg, true, OCILayer(t, BusyboxEntries(t)...))
}
