package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"80M", 80 << 20, true},
		{"80m", 80 << 20, true},
		{"80mb", 80 << 20, true},
		{"80MiB", 80 << 20, true},
		{"1g", 1 << 30, true},
		{"1.5g", 3 << 29, true},
		{"512k", 512 << 10, true},
		{"100b", 100, true},
		{"100", 100, true},
		{"2t", 2 << 40, true},
		{"", 0, false},
		{"m", 0, false},
		{"-1m", 0, false},
		{"1e3", 0, false},
		{"0x10", 0, false},
		{"ten", 0, false},
		{"1x", 0, false},
		{"inf", 0, false},
		{"99999999999p", 0, false},
	}
	for _, tt := range tests {
		got, err := parseBytes(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// blockDevice finds a block device of this machine and its "major:minor" from sysfs.
func blockDevice(t *testing.T) (string, string) {
	t.Helper()
	ents, _ := os.ReadDir("/sys/block")
	for _, e := range ents {
		dev := "/dev/" + e.Name()
		b, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "dev"))
		if _, serr := os.Stat(dev); err == nil && serr == nil {
			return dev, strings.TrimSpace(string(b))
		}
	}
	t.Skip("no block device in /sys/block with a node in /dev")
	return "", ""
}

func TestParseDeviceRate(t *testing.T) {
	dev, majMin := blockDevice(t)
	tests := []struct {
		in  string
		bps uint64
		ok  bool
	}{
		{dev + ":1mb", 1 << 20, true},
		{dev + ":10M", 10 << 20, true},
		{dev + ":512", 512, true},
		{dev, 0, false},
		{dev + ":fast", 0, false},
		{dev + ":-1m", 0, false},
		{"sda:1mb", 0, false},
		{"/etc/passwd:1mb", 0, false},
		{"/dev/../etc/passwd:1mb", 0, false},
		{"/dev/null:1mb", 0, false}, // a character device
		{"/dev/nosuch-imgrun:1mb", 0, false},
	}
	for _, tt := range tests {
		got, err := parseDeviceRate(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("parseDeviceRate(%q) = %+v, %v; want ok=%v", tt.in, got, err, tt.ok)
			continue
		}
		if !tt.ok {
			continue
		}
		if got.Path != dev || got.BytesPerSec != tt.bps || fmt.Sprintf("%d:%d", got.Major, got.Minor) != majMin {
			t.Errorf("parseDeviceRate(%q) = %+v, want %s (%s) at %d B/s", tt.in, got, dev, majMin, tt.bps)
		}
	}
}
