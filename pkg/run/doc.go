// Package run is imgrun's launcher: it runs a command in a root file system the way
// `docker run --rm` does, without a daemon.
//
// How do I use this package? Call MaybeInit first thing in main (and in TestMain), build a Spec
// (SpecFromImage applies an image's config by docker's rules) and call Run:
//
//	func main() {
//		run.MaybeInit() // the launcher re-executes this binary as the container's init
//		spec, _ := run.SpecFromImage(img.Config.Config, run.Overrides{Args: os.Args[2:]})
//		spec.Rootfs = os.Args[1]
//		err := run.Run(ctx, spec, run.Stdio{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr})
//		var exit *run.ExitError // the command's status, docker's codes
//		...
//	}
//
// # What a run is
//
// Run re-executes its own binary (see "The init" below) in new mount, UTS, IPC, PID and
// network namespaces (and a user namespace mapping the caller to root when the caller is not
// root), with its parent-death signal set to SIGKILL. The Spec travels as JSON over an inherited pipe, written only after the
// new process is in the run's cgroup. That init process, PID 1 of the new PID namespace:
//
//   - makes every mount private, mounts a tmpfs over Spec.StateDir (seen by this run only) and
//     mounts the root: an overlay whose lower layer is Spec.Rootfs (never modified) and whose
//     upper layer is in that tmpfs (volatile: never synced), or in Spec.KeepDir; a read-only
//     bind of the rootfs where overlayfs is missing; nosuid and nodev. With Spec.Lowers the
//     image is a layer stack (Rootfs on top), composed by overlayfs through the mount API
//     (one fsconfig "lowerdir+" per layer: mount(2)'s one page of options holds about 40 of
//     them), and a root without overlayfs is an error. Everything the init reads from the
//     image (/etc/passwd, the working directory, the mount targets) it reads in that root;
//   - mounts /proc (with docker's masked and read-only paths), /sys read-only, a tmpfs /dev with
//     null, zero, full, random, urandom and tty bound from the host, devpts, /dev/shm and the
//     usual symlinks, a tmpfs /tmp, and binds /etc/hosts, /etc/hostname, /etc/resolv.conf and
//     Spec.Mounts. Every target is resolved inside the rootfs with openat2(RESOLVE_IN_ROOT) and
//     mounted through its /proc/self/fd link; /proc, /sys and /dev may not be symlinks;
//   - sets the host name, brings up lo (NetworkNone), pivot_roots into the new root and
//     detaches the old one. Where pivot_root cannot work (an initramfs root) or Spec.NoPivot
//     asks (runc's --no-pivot), it moves the new root over the namespace's root and chroots
//     into it: the host's tree then stays in the namespace, covered and out of reach (root
//     with CAP_SYS_CHROOT cannot climb out of it with ".."), but a process that got
//     CAP_SYS_ADMIN could unmount the cover; see root_linux.go. When imgrun itself runs in a
//     chroot of a plain directory ("/" is not a mount point), the init leaves that chroot for
//     the namespace's real root to make the mounts private and to pivot (or move) there;
//   - resolves Spec.User in the image's /etc/passwd and /etc/group (regular files of at most
//     4 MiB, ids in 0..2^31-1), creates and enters the working directory (and checks getcwd),
//     finds the command on the Spec's PATH inside the root;
//   - installs a seccomp deny-list (a subset of docker's profile: keyctl, bpf, perf_event_open,
//     userfaultfd, io_uring, module and kexec loading, file handles, the mount API, new user
//     namespaces; Spec.Unconfined turns it off), drops the capability bounding set to docker's
//     defaults, clears the inheritable and ambient sets and sets no_new_privs, all on its
//     locked thread, marks every descriptor above 2 close-on-exec, and forks the command from
//     that thread, which switches user and groups and executes it.
//
// # The init
//
// The init stays PID 1 of the run, as `docker run --init` (tini) does: it forwards SIGINT,
// SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH to the command, reaps every orphan
// the kernel re-parents to it, and exits with the command's status (128+N when signal N killed
// it; it reports N to Run, so ExitError.Signal is set). Run forwards those signals to the
// init, as docker's signal proxy does, so Ctrl-C on `imgrun node` acts as on `docker run
// node`; a command that does not handle SIGTERM dies of it, as under docker --init. With a
// terminal the command is in its own foreground process group, so the terminal's ^C reaches
// it directly. Spec.NoInit instead executes the command as PID 1 (docker without --init): it
// then gets only the signals it handles, and reaping orphans is its job. When PID 1 exits the
// kernel kills every other process of the namespace, so a daemon that double-forks cannot
// outlive the run.
//
// An init running imgrun's binary inside the run is what CVE-2019-5736 attacked: a process of
// the run opens /proc/1/exe (or makes a command `#!/proc/self/exe` execute the binary again,
// then opens that process's exe) and writes through it over the host's binary. Two defences:
//
//   - the init is executed from a detached, read-only bind mount of /proc/self/exe
//     (open_tree(OPEN_TREE_CLONE) and mount_setattr(MOUNT_ATTR_RDONLY), made once per
//     process): writing through any /proc/N/exe of the run fails with EROFS, and a run
//     cannot make a mount writable (no CAP_SYS_ADMIN; seccomp refuses the mount API). Where
//     that needs privileges the caller lacks (rootless), the binary as it is if the caller
//     cannot write it (the run's root is the caller), else a sealed memfd copy
//     (F_SEAL_WRITE|F_SEAL_GROW|F_SEAL_SHRINK|F_SEAL_SEAL), as runc's exeseal does. Measured
//     with a 20 MB binary: 0.07 ms for the bind, 3.8 ms for the copy (BenchmarkInitExecutable);
//     hence the bind first. A memfd cannot be shared between processes, so each CLI run of a
//     rootless user who owns the binary pays the copy.
//   - the init makes itself non-dumpable before anything else runs in the namespace, so
//     /proc/1/exe, /proc/1/mem, /proc/1/root and the like cannot even be opened by the run
//     (that needs CAP_SYS_PTRACE, which docker's default set lacks).
//
// Without a terminal the command runs in a new session with no controlling terminal (no
// TIOCSTI injection into the caller's terminal); with one, it gets a new pseudo-terminal that
// Run relays.
//
// Limits are applied through a cgroup per run (v2 or v1), created only when Spec.Limits or
// Spec.Stats ask for one. Run then kills what is left in it and removes it. All mounts and
// files of a run live in its private mount namespace and disappear with its last process, so
// even a SIGKILLed imgrun leaves no mount or layer behind (its cgroup, if any, is removed by
// the next run that makes one: a run with a cgroup holds a lock file named after it in
// /run/imgrun/cgroups, and a cgroup whose lock file is gone or free is a dead run's).
// Starting a run without limits writes nothing to disk: disk metadata operations cost tens
// of milliseconds on a busy machine (/run is a tmpfs on most hosts).
package run
