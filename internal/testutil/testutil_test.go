package testutil

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func TestBuildGo(t *testing.T) {
	const src = `package main

import (
	"fmt"
	"os"
)

func main() { fmt.Println("hello", len(os.Args)) }
`
	p := BuildGo(t, "hello", src)
	out, err := exec.Command(p, "a", "b").Output()
	if err != nil {
		t.Fatalf("run %s: %v", p, err)
	}
	if got := strings.TrimSpace(string(out)); got != "hello 3" {
		t.Fatalf("output = %q, want %q", got, "hello 3")
	}
	// Static: no ELF interpreter, so it runs in an empty rootfs.
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "ld-linux") {
		t.Errorf("%s is dynamically linked", p)
	}
	if again := BuildGo(t, "hello", src); again != p {
		t.Errorf("second build = %s, want cached %s", again, p)
	}
}

func TestFreePort(t *testing.T) {
	p := FreePort(t)
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		t.Fatalf("port %d not free: %v", p, err)
	}
	l.Close()
}

func TestMustBin(t *testing.T) {
	if p := MustBin(t, "sh"); !strings.HasSuffix(p, "/sh") {
		t.Errorf("MustBin(sh) = %q", p)
	}
}
