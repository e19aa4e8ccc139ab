package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/imgrun/imgrun/internal/progress"
	"github.com/imgrun/imgrun/pkg/layers"
	"github.com/imgrun/imgrun/pkg/registry"
	"github.com/imgrun/imgrun/pkg/rootfs"
	"github.com/imgrun/imgrun/pkg/run"
)

func (a *app) runCommand() *cobra.Command {
	var f runFlags
	c := &cobra.Command{
		Use:   "run [flags] IMAGE [COMMAND [ARG...]]",
		Short: "Run a command in an image (pulled and unpacked once, then cached)",
		Long: `Run a command in a new container made from IMAGE: the image's entrypoint and command
unless COMMAND is given, with the image's environment, working directory and user.
Flags after IMAGE belong to COMMAND. The exit status is the command's (docker's codes:
125 when imgrun fails, 126 when the command cannot be run, 127 when it is not found).`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return errors.New("missing IMAGE (usage: imgrun run [flags] IMAGE [COMMAND [ARG...]])")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			what := "run " + args[0]
			spec, started, release, err := a.runSpec(cmd, &f, args)
			if err != nil {
				return fail(what, err)
			}
			defer release()
			return fail(what, a.run(cmd.Context(), &f, started, spec))
		},
	}
	// Everything after IMAGE is the command's: `imgrun node:latest node -v`.
	c.Flags().SetInterspersed(false)
	f.register(c.Flags())
	c.Flags().Bool("init", true, "run an init as PID 1 that forwards signals and reaps zombies (docker's --init; --init=false runs the command as PID 1)")
	return c
}

// runSpec turns the flags into a run.Spec, starts the run's init (startRun), gets the image
// into the store and its rootfs into the rootfs cache (held against removal until release is
// called). Flags are checked before anything touches the network or the disk, or starts. A
// cold image is unpacked while it downloads.
func (a *app) runSpec(cmd *cobra.Command, f *runFlags, args []string) (_ run.Spec, _ *run.Started, _ func(), err error) {
	ctx := cmd.Context()
	ref, err := registry.ParseReference(args[0])
	if err != nil {
		return run.Spec{}, nil, nil, err
	}
	p, err := parsePlatform(f.platform)
	if err != nil {
		return run.Spec{}, nil, nil, err
	}
	policy, err := parsePullPolicy(f.pull)
	if err != nil {
		return run.Spec{}, nil, nil, err
	}
	o := run.Overrides{Args: args[1:], Env: f.env, Dir: f.workdir, User: f.user}
	if cmd.Flags().Changed("entrypoint") {
		o.Entrypoint = &f.entrypoint
	}
	for _, name := range f.envFiles {
		lines, err := readEnvFile(name)
		if err != nil {
			return run.Spec{}, nil, nil, err
		}
		o.EnvFile = append(o.EnvFile, lines...)
	}
	var base run.Spec
	if base.Limits, err = f.limits(); err != nil {
		return run.Spec{}, nil, nil, err
	}
	for _, v := range f.volumes {
		m, err := run.ParseMount(v)
		if err != nil {
			return run.Spec{}, nil, nil, err
		}
		base.Mounts = append(base.Mounts, m)
	}
	network, err := parseNetwork(f.network)
	if err != nil {
		return run.Spec{}, nil, nil, err
	}
	launch := run.Spec{Network: run.Network(network), TTY: f.tty, Stdin: f.stdin, Limits: base.Limits, Stats: f.stats}
	initStarted, err := a.startRun(launch)
	if err != nil {
		return run.Spec{}, nil, nil, err
	}
	defer func() { // the error returns below return no Started: end it here
		if err != nil {
			initStarted.Abort()
		}
	}()

	st, err := a.openStore()
	if err != nil {
		return run.Spec{}, nil, nil, err
	}
	cache, err := rootfs.OpenCache(a.root)
	if err != nil {
		return run.Spec{}, nil, nil, err
	}
	var root runRoot
	release := func() {}
	img, err := a.imageBuild(ctx, st, ref, p, policy, func(ctx context.Context, img *layers.Image, ls []rootfs.Layer) error {
		built, err := a.buildRunRoot(ctx, cache, img, ls)
		if err == nil {
			root, release = built, built.release
		}
		return err
	})
	if err != nil {
		release()
		return run.Spec{}, nil, nil, err
	}
	spec, err := run.SpecFromImage(img.Config.Config, o)
	if err != nil {
		release()
		return run.Spec{}, nil, nil, err
	}
	spec.Rootfs, spec.Lowers = root.Top, root.Lowers
	spec.Hostname = f.hostname
	spec.Mounts = base.Mounts
	spec.Network = run.Network(network)
	spec.ReadOnly = f.readOnly
	spec.NoPivot = f.noPivot
	if f.keep != "" {
		if spec.KeepDir, err = filepath.Abs(f.keep); err != nil {
			release()
			return run.Spec{}, nil, nil, fmt.Errorf("--keep: %w", err)
		}
	}
	spec.TTY = f.tty
	spec.Stdin = f.stdin
	spec.Limits = base.Limits
	spec.Stats = f.stats // a cgroup is made only for limits or --stats
	spec.StateDir = filepath.Join(a.root, "runs")
	withInit, _ := cmd.Flags().GetBool("init")
	spec.NoInit = !withInit
	return spec, initStarted, release, nil
}

// startRun starts the run's init (run.Start) with what the flags say about how it starts:
// launch's network, terminal, stdin and cgroup. Starting the init (a new process in new
// namespaces running this binary again) takes longer than finding a cached image, so the two
// overlap; the image's side of the Spec follows in run.
func (a *app) startRun(launch run.Spec) (*run.Started, error) {
	return run.Start(launch, run.Stdio{Stdin: a.stdin, Stdout: a.stdout, Stderr: a.stderr})
}

// run runs spec, whose rootfs runSpec prepared, in the run startRun started.
func (a *app) run(ctx context.Context, f *runFlags, started *run.Started, spec run.Spec) error {
	// While the command runs, run.Run forwards SIGINT, SIGTERM, … to it, as docker does.
	// main's ctx is cancelled by those same signals; cancelling would also stop the run
	// (SIGTERM, then SIGKILL), so the run gets a ctx that signals do not cancel.
	runCtx := context.WithoutCancel(ctx)
	start := time.Now()
	stats, err := started.Run(runCtx, spec)
	if !f.stats {
		return err
	}
	var ee *run.ExitError
	if err == nil || errors.As(err, &ee) { // the command ran: there is something to report
		a.printStats(stats, time.Since(start))
	}
	return err
}

// printStats prints --stats on stderr: peak memory and CPU time from the run's cgroup.
func (a *app) printStats(s *run.Stats, wall time.Duration) {
	if s == nil {
		fmt.Fprintf(a.stderr, "imgrun: stats: not available (the run had no cgroup), wall %s\n", wall.Round(time.Millisecond))
		return
	}
	fmt.Fprintf(a.stderr, "imgrun: stats: peak memory %s, cpu %s (user %s, system %s), wall %s%s\n",
		progress.FormatBytes(int64(s.MemoryPeakBytes)),
		time.Duration(s.CPUTotalNanos).Round(time.Millisecond),
		time.Duration(s.CPUUserNanos).Round(time.Millisecond),
		time.Duration(s.CPUSystemNanos).Round(time.Millisecond),
		wall.Round(time.Millisecond), map[bool]string{true: ", OOM-killed"}[s.OOMKilled])
}

func readEnvFile(name string) ([]string, error) {
	fh, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("--env-file: %w", err)
	}
	defer fh.Close()
	lines, err := run.ParseEnvFile(fh)
	if err != nil {
		return nil, fmt.Errorf("--env-file %s: %w", name, err)
	}
	return lines, nil
}

// commandStatus maps pkg/run's *ExitError to the command's exit status. A command that
// ran and failed prints nothing (its status says it); one that could not be started
// (126, 127) or was OOM-killed gets its one line.
func commandStatus(err error) (int, string, bool) {
	var ee *run.ExitError
	if !errors.As(err, &ee) {
		return 0, "", false
	}
	if ee.Err != nil {
		return ee.Code, err.Error(), true
	}
	return ee.Code, "", true
}
