package flock

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestExclusiveAndShared(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.lock")
	ex, err := Acquire(t.Context(), p, unix.LOCK_EX)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := TryAcquire(p, unix.LOCK_SH); !errors.Is(err, ErrBusy) {
		t.Fatalf("TryAcquire(shared) while held exclusively = %v, want ErrBusy", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	if _, err := Acquire(ctx, p, unix.LOCK_EX); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire while held = %v, want the ctx's deadline", err)
	}
	ex.Unlock()
	ex.Unlock() // twice is fine
	a, err := TryAcquire(p, unix.LOCK_SH)
	if err != nil {
		t.Fatal(err)
	}
	b, err := TryAcquire(p, unix.LOCK_SH)
	if err != nil {
		t.Fatalf("second shared lock: %v", err)
	}
	if _, err := TryAcquire(p, unix.LOCK_EX); !errors.Is(err, ErrBusy) {
		t.Fatalf("TryAcquire(exclusive) while shared = %v, want ErrBusy", err)
	}
	a.Unlock()
	b.Unlock()

	// A waiter gets the lock once it is released.
	held, err := Acquire(t.Context(), p, unix.LOCK_EX)
	if err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(20 * time.Millisecond); held.Unlock() }()
	got, err := Acquire(t.Context(), p, unix.LOCK_EX)
	if err != nil {
		t.Fatal(err)
	}
	got.Unlock()
}
