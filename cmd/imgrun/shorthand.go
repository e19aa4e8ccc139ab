package main

import (
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// shorthand rewrites `imgrun [global flags] IMAGE [CMD...]` to `imgrun [global flags] run
// IMAGE [CMD...]`: whenever the first word that is not a global flag is not a subcommand,
// it is an image. A leading flag that is not global (`imgrun -it alpine sh`) also starts a
// run, since only run has such flags.
func shorthand(root *cobra.Command, args []string) []string {
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			// `imgrun -- IMAGE`: everything after -- is the run.
			return insert(args, i, "run")
		}
		if strings.HasPrefix(arg, "-") && arg != "-" {
			name, hasValue := flagName(arg)
			f := lookupFlag(root, name)
			if f == nil {
				if name == "help" || name == "h" || name == "version" {
					return args
				}
				return insert(args, i, "run")
			}
			if !hasValue && f.NoOptDefVal == "" {
				i++ // the flag's value is the next word
			}
			continue
		}
		if isSubcommand(root, arg) {
			return args
		}
		return insert(args, i, "run")
	}
	return args
}

// flagName returns the name of a flag word ("--root=/x" → "root", "-q" → "q") and whether
// the value is attached. Combined short flags ("-qx") are named by their first letter.
func flagName(arg string) (string, bool) {
	if strings.HasPrefix(arg, "--") {
		name, _, hasValue := strings.Cut(arg[2:], "=")
		return name, hasValue
	}
	name := arg[1:2]
	return name, len(arg) > 2
}

func lookupFlag(root *cobra.Command, name string) *pflag.Flag {
	fs := root.PersistentFlags()
	if len(name) == 1 {
		return fs.ShorthandLookup(name)
	}
	return fs.Lookup(name)
}

func isSubcommand(root *cobra.Command, word string) bool {
	if word == "help" {
		return true
	}
	for _, c := range root.Commands() {
		if c.Name() == word || c.HasAlias(word) {
			return true
		}
	}
	return false
}

func insert(args []string, i int, word string) []string {
	out := make([]string, 0, len(args)+1)
	out = append(out, args[:i]...)
	out = append(out, word)
	return append(out, args[i:]...)
}
