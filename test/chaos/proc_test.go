//go:build chaos

package chaos

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// result is what one imgrun process did.
type result struct {
	args           []string
	code           int // exit status; -1 when killed by a signal
	stdout, stderr string
	killed         bool // our SIGKILL landed while the process was running
	timedOut       bool // the hard deadline killed it: a hang
	dur            time.Duration
}

// lastLine is the last non-empty line of stderr: imgrun's one-line error.
func (r result) lastLine() string {
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	return lines[len(lines)-1]
}

// cli runs imgrun with a global --root and -q against one root.
type cli struct {
	root     string
	insecure []string
	deadline time.Duration // hard deadline per process (default 2 minutes)
	env      []string
}

func (c cli) argv(args []string) []string {
	a := []string{"--root", c.root, "-q"}
	for _, h := range c.insecure {
		a = append(a, "--insecure", h)
	}
	return append(a, args...)
}

// start starts imgrun; killAfter > 0 sends SIGKILL after that long.
func (c cli) start(t testing.TB, killAfter time.Duration, args ...string) func() result {
	t.Helper()
	deadline := c.deadline
	if deadline == 0 {
		deadline = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	cmd := exec.CommandContext(ctx, imgrun(t), c.argv(args)...)
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}, c.env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 10 * time.Second
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start imgrun: %v", err)
	}
	countRuns.Add(1)
	var timer *time.Timer
	if killAfter > 0 {
		timer = time.AfterFunc(killAfter, func() { cmd.Process.Signal(syscall.SIGKILL) })
	}
	return func() result {
		err := cmd.Wait()
		if timer != nil {
			timer.Stop()
		}
		r := result{args: args, stdout: stdout.String(), stderr: stderr.String(), dur: time.Since(begin)}
		r.timedOut = ctx.Err() != nil
		cancel()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			r.code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				r.killed = ws.Signal() == syscall.SIGKILL && !r.timedOut
			}
		default:
			r.code = -2
			r.stderr += "\n" + err.Error()
		}
		if r.killed {
			countKills.Add(1)
		}
		if strings.Contains(r.stderr, "panic:") && strings.Contains(r.stderr, "goroutine ") {
			t.Logf("imgrun %q panicked: %s", args, oneLine(r.stderr[strings.Index(r.stderr, "panic:"):], 8))
		}
		if r.timedOut {
			finding(t, "imgrun %q hung: still running after its %v deadline; stderr: %s", args, deadline, r.stderr)
		}
		return r
	}
}

// run runs imgrun to completion.
func (c cli) run(t testing.TB, args ...string) result {
	t.Helper()
	return c.start(t, 0, args...)()
}

// must runs imgrun and fails the test unless it exits 0.
func (c cli) must(t testing.TB, args ...string) result {
	t.Helper()
	r := c.run(t, args...)
	if r.code != 0 {
		t.Fatalf("imgrun %q: exit %d: %s", args, r.code, r.stderr)
	}
	return r
}

// oneLine joins the first n lines of s with " | ".
func oneLine(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, " | ")
}
