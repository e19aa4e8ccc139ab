package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/imgrun/imgrun/internal/progress"
)

// Exit codes, borrowed from docker: 125 when imgrun itself fails; 126 and 127 when the
// command cannot be invoked or is not found; otherwise the command's own status.
const (
	exitOK          = 0
	exitFailed      = 125
	exitCannotRun   = 126
	exitNotFound    = 127
	exitVerifyFound = 1 // verify ran and found (and removed) corrupt blobs
)

// app holds the global flags and the process's stdio; every subcommand reads them.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer

	root     string
	insecure []string
	mirrors  []string
	stall    time.Duration // --stall-timeout: a transfer that gets no bytes this long fails
	progress string
	quiet    bool
	debug    bool

	log  *slog.Logger // warnings (and with --debug everything) on stderr
	dlog *slog.Logger // debug-only: libraries whose warnings the CLI reports itself
}

// opError is an error that already names what failed ("pull node:latest: …"); Main prints
// it after "imgrun: " as it is. Other errors (flag parsing) get the command's name.
type opError struct {
	what string
	err  error
}

// Error avoids saying the same thing twice: the library already prefixes most errors
// with its own verb and the normalized reference ("pull index.docker.io/library/node:latest: …").
func (e *opError) Error() string {
	msg := e.err.Error()
	if verb, _, _ := strings.Cut(e.what, " "); strings.HasPrefix(msg, verb+" ") {
		return msg
	}
	return e.what + ": " + msg
}
func (e *opError) Unwrap() error { return e.err }

// fail wraps err with what failed, for the one line Main prints.
func fail(what string, err error) error {
	if err == nil {
		return nil
	}
	return &opError{what: what, err: err}
}

// exitError carries a process exit status that is not a failure of imgrun: the command's
// own status, or verify's "corruption found". msg, when set, is printed as one line.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	return fmt.Sprintf("exit status %d", e.code)
}

// Main runs imgrun with args (without the program name) and returns the exit status.
// It is main without the process: tests call it in-process.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.command()
	root.SetArgs(shorthand(root, args))
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	c, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	code, line := a.report(c, err)
	if line != "" {
		fmt.Fprintln(stderr, "imgrun: "+oneLine(line))
	}
	return code
}

// report maps an error to an exit status and the line to print (without "imgrun: ").
func (a *app) report(c *cobra.Command, err error) (int, string) {
	if code, msg, ok := commandStatus(err); ok {
		return code, msg
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code, ee.msg
	}
	var oe *opError
	if errors.As(err, &oe) {
		return exitFailed, err.Error()
	}
	name := "imgrun"
	if c != nil {
		name = c.Name()
	}
	return exitFailed, name + ": " + err.Error()
}

// oneLine folds a multi-line message onto one line: scripts read stderr line by line.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// command builds the cobra tree. The root has no action of its own: a first word that is
// not a subcommand is rewritten to `run` before cobra sees it (see shorthand).
func (a *app) command() *cobra.Command {
	root := &cobra.Command{
		Use:   "imgrun [flags] IMAGE [COMMAND [ARG...]]",
		Short: "Pull, unpack, export and run container images without a daemon",
		Long: `imgrun pulls container images into a verified local cache (an OCI image layout),
flattens them into a root filesystem, exports them as a tarball, and runs commands in them.

"imgrun IMAGE [COMMAND [ARG...]]" is short for "imgrun run IMAGE [COMMAND [ARG...]]".`,
		SilenceErrors:     true,
		SilenceUsage:      true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return a.setup() },
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fail(c.Name(), fmt.Errorf("%w (see 'imgrun %s --help')", err, c.Name()))
	})
	f := root.PersistentFlags()
	f.StringVar(&a.root, "root", "", "cache directory (env IMGRUN_ROOT; default /var/lib/imgrun as root, $XDG_CACHE_HOME/imgrun otherwise)")
	f.StringArrayVar(&a.insecure, "insecure", nil, "registry `HOST[:PORT]` to reach over plain HTTP or unverified TLS (repeatable)")
	f.StringArrayVar(&a.mirrors, "mirror", nil, "pull-through mirror `URL` for Docker Hub images, tried in order (repeatable; env IMGRUN_MIRRORS, comma-separated)")
	f.DurationVar(&a.stall, "stall-timeout", 0, "fail a registry transfer that receives no bytes for this `DURATION` (env IMGRUN_STALL_TIMEOUT; default 30s)")
	f.StringVar(&a.progress, "progress", "auto", "progress output on stderr: auto, tty, plain, json or quiet")
	f.BoolVarP(&a.quiet, "quiet", "q", false, "no progress output")
	f.BoolVar(&a.debug, "debug", false, "debug logging on stderr")
	for _, c := range []*cobra.Command{
		a.pullCommand(), a.imagesCommand(), a.inspectCommand(), a.rmiCommand(),
		a.gcCommand(), a.verifyCommand(), a.unpackCommand(), a.exportCommand(), a.runCommand(),
	} {
		root.AddCommand(c)
	}
	return root
}

// setup resolves the global flags once cobra has parsed them.
func (a *app) setup() error {
	if _, err := progress.ParseMode(a.progress); err != nil {
		return fail("--progress", err)
	}
	level := slog.LevelWarn
	if a.debug {
		level = slog.LevelDebug
	}
	a.log = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))
	a.dlog = slog.New(slog.DiscardHandler)
	if a.debug {
		a.dlog = a.log
	}
	if a.root == "" {
		a.root = defaultRoot()
	}
	if a.stall == 0 {
		if v := os.Getenv("IMGRUN_STALL_TIMEOUT"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return fail("IMGRUN_STALL_TIMEOUT", fmt.Errorf("invalid duration %q", v))
			}
			a.stall = d
		}
	}
	if a.stall < 0 {
		return fail("--stall-timeout", fmt.Errorf("must be positive, not %s", a.stall))
	}
	if len(a.mirrors) == 0 {
		for _, m := range strings.Split(os.Getenv("IMGRUN_MIRRORS"), ",") {
			if m = strings.TrimSpace(m); m != "" {
				a.mirrors = append(a.mirrors, m)
			}
		}
	}
	return nil
}

// defaultRoot: $IMGRUN_ROOT, else /var/lib/imgrun for root, else the user's cache dir.
func defaultRoot() string {
	if r := os.Getenv("IMGRUN_ROOT"); r != "" {
		return r
	}
	if os.Geteuid() == 0 {
		return "/var/lib/imgrun"
	}
	if x := os.Getenv("XDG_CACHE_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "imgrun")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".cache", "imgrun")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("imgrun-%d", os.Geteuid()))
}

// renderer returns the progress renderer for stderr that --progress and --quiet ask for.
func (a *app) renderer() progress.Renderer {
	m, _ := progress.ParseMode(a.progress) // validated in setup
	if a.quiet {
		m = progress.Quiet
	}
	return progress.New(a.stderr, m)
}
