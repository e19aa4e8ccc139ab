package run

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"unicode"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Overrides are what the user said on the command line about the image's config, spelled as
// docker's run flags.
type Overrides struct {
	// Args are the words after the image reference; when any are given they replace the
	// image's Cmd.
	Args []string
	// Entrypoint is --entrypoint: nil keeps the image's; otherwise it replaces the image's
	// Entrypoint (as one word; "" means none) and clears the image's Cmd, as docker does.
	Entrypoint *string
	// EnvFile are the lines of --env-file files (see ParseEnvFile), in order; Env are the -e
	// values. Both are KEY=VALUE, or KEY alone to take the host's value (dropped when the host
	// has none).
	EnvFile, Env []string
	// Dir is -w: the working directory (absolute).
	Dir string
	// User is -u: user[:group], names or numbers.
	User string
	// LookupEnv reads the host's environment for KEY-only entries; nil means os.LookupEnv.
	LookupEnv func(key string) (string, bool)
}

// SpecFromImage applies an image's config and the user's overrides by docker's rules:
// Env is the image's, then the env files', then -e (a later value of a key wins, in the first
// key's place); PATH is DefaultPath when none is set; Dir is -w, else the image's WorkingDir,
// else "/"; User is -u, else the image's; Args are Entrypoint + Cmd, where arguments after the
// reference replace Cmd and --entrypoint replaces Entrypoint and drops the image's Cmd.
// The caller fills Rootfs and the fields that do not come from the image.
func SpecFromImage(cfg ocispec.ImageConfig, o Overrides) (Spec, error) {
	lookup := o.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	env := newEnvList()
	for _, kv := range cfg.Env {
		if err := env.set(kv, nil); err != nil {
			return Spec{}, fmt.Errorf("image config: %w", err)
		}
	}
	for _, kv := range o.EnvFile {
		if err := env.set(kv, lookup); err != nil {
			return Spec{}, fmt.Errorf("env file: %w", err)
		}
	}
	for _, kv := range o.Env {
		if err := env.set(kv, lookup); err != nil {
			return Spec{}, err
		}
	}
	if _, ok := env.get("PATH"); !ok {
		_ = env.set("PATH="+DefaultPath, nil)
	}

	entrypoint, cmd := cfg.Entrypoint, cfg.Cmd
	if o.Entrypoint != nil {
		entrypoint, cmd = nil, nil
		if *o.Entrypoint != "" {
			entrypoint = []string{*o.Entrypoint}
		}
	}
	if len(o.Args) > 0 {
		cmd = o.Args
	}
	args := append(append([]string{}, entrypoint...), cmd...)
	if len(args) == 0 || args[0] == "" {
		return Spec{}, ErrNoCommand
	}

	dir := cfg.WorkingDir
	if o.Dir != "" {
		dir = o.Dir
	}
	if dir == "" {
		dir = "/"
	}
	if !path.IsAbs(dir) {
		return Spec{}, fmt.Errorf("%w: the working directory %q is invalid, it needs to be an absolute path", ErrBadSpec, dir)
	}
	user := cfg.User
	if o.User != "" {
		user = o.User
	}
	return Spec{Args: args, Env: env.list(), Dir: path.Clean(dir), User: user}, nil
}

// ParseEnvFile reads docker's --env-file format: one KEY=VALUE or KEY per line; blank lines and
// lines starting with # are skipped; leading white space is trimmed; the value is taken
// verbatim (no quotes are removed). The result goes into Overrides.EnvFile.
func ParseEnvFile(r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimLeftFunc(sc.Text(), unicode.IsSpace)
		if n == 1 {
			line = strings.TrimPrefix(line, "\ufeff")
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, _, _ := strings.Cut(line, "=")
		if key == "" || strings.ContainsFunc(key, unicode.IsSpace) {
			return nil, fmt.Errorf("env file line %d: variable %q contains white space or is empty", n, key)
		}
		out = append(out, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read env file: %w", err)
	}
	return out, nil
}

// envList is an ordered environment where a later value of a key replaces the earlier one.
type envList struct {
	keys []string
	vals map[string]string
}

func newEnvList() *envList { return &envList{vals: map[string]string{}} }

// set adds KEY=VALUE, or KEY alone whose value lookup finds (nil lookup: KEY alone is an error).
func (e *envList) set(kv string, lookup func(string) (string, bool)) error {
	key, val, hasVal := strings.Cut(kv, "=")
	if key == "" || strings.ContainsRune(kv, 0) {
		return fmt.Errorf("invalid environment variable %q", kv)
	}
	if !hasVal {
		if lookup == nil {
			return fmt.Errorf("invalid environment variable %q: no value", kv)
		}
		v, ok := lookup(key)
		if !ok {
			return nil // docker drops -e KEY when the host has no KEY
		}
		val = v
	}
	if _, ok := e.vals[key]; !ok {
		e.keys = append(e.keys, key)
	}
	e.vals[key] = val
	return nil
}

func (e *envList) get(key string) (string, bool) { v, ok := e.vals[key]; return v, ok }

func (e *envList) list() []string {
	out := make([]string, 0, len(e.keys))
	for _, k := range e.keys {
		out = append(out, k+"="+e.vals[k])
	}
	return out
}
