package main

import (
	"slices"
	"testing"
)

func TestShorthand(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"image alone", []string{"alpine"}, []string{"run", "alpine"}},
		{"command flags after image belong to the command", []string{"node:latest", "node", "-v"}, []string{"run", "node:latest", "node", "-v"}},
		{"subcommand", []string{"pull", "alpine"}, []string{"pull", "alpine"}},
		{"run stays run", []string{"run", "-e", "A=1", "alpine"}, []string{"run", "-e", "A=1", "alpine"}},
		{"every subcommand", []string{"images"}, []string{"images"}},
		{"gc", []string{"gc"}, []string{"gc"}},
		{"help", []string{"help", "pull"}, []string{"help", "pull"}},
		{"global flag with value", []string{"--root", "/r", "alpine", "ls"}, []string{"--root", "/r", "run", "alpine", "ls"}},
		{"global flag with =value", []string{"--root=/r", "alpine"}, []string{"--root=/r", "run", "alpine"}},
		{"global bool flag", []string{"-q", "alpine"}, []string{"-q", "run", "alpine"}},
		{"global flags then subcommand", []string{"--mirror", "http://m", "--debug", "pull", "x"}, []string{"--mirror", "http://m", "--debug", "pull", "x"}},
		{"an image named like a flag value", []string{"--root", "pull", "images"}, []string{"--root", "pull", "images"}},
		{"run flag first", []string{"-it", "alpine", "sh"}, []string{"run", "-it", "alpine", "sh"}},
		{"run flag with value first", []string{"-e", "A=1", "alpine"}, []string{"run", "-e", "A=1", "alpine"}},
		{"help flag", []string{"--help"}, []string{"--help"}},
		{"short help flag", []string{"-h"}, []string{"-h"}},
		{"double dash", []string{"--", "alpine"}, []string{"run", "--", "alpine"}},
		{"image named like a subcommand with a registry", []string{"localhost:5000/pull"}, []string{"run", "localhost:5000/pull"}},
		{"nothing", nil, nil},
	}
	root := (&app{}).command()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := shorthand(root, tt.args); !slices.Equal(got, tt.want) {
				t.Errorf("shorthand(%q) = %q, want %q", tt.args, got, tt.want)
			}
		})
	}
}
