package run

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// The run's root is an overlay: the image's tree is the read-only lower layer (or its layer
// stack, Rootfs over Lowers); the upper layer and the overlay's work dir are in the run's tmpfs
// (volatile: never synced), or in KeepDir on disk. Where overlayfs is missing or refuses, the
// root of a single Rootfs is a read-only bind of it (writes then fail with EROFS except in
// /tmp, /dev/shm and bind mounts); a layer stack fails instead. Every mount is nosuid (unless
// NewPrivileges) and nodev, so setuid files and device nodes shipped in an image are inert.

// mountRoot mounts the run's tmpfs on c.RunDir, writes the /etc files there, mounts the run's
// root at c.RunDir/root and reports whether the root is writable.
func mountRoot(c *initConfig) (string, bool, error) {
	if err := unix.Mount("tmpfs", c.RunDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0700"); err != nil {
		return "", false, &os.PathError{Op: "mount tmpfs on", Path: c.RunDir, Err: err}
	}
	target := filepath.Join(c.RunDir, "root")
	upper, work := c.KeepUpper, c.KeepWork
	if upper == "" {
		upper, work = filepath.Join(c.RunDir, "upper"), filepath.Join(c.RunDir, "work")
	}
	for _, d := range []string{target, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return "", false, err
		}
	}
	if err := writeEtcFiles(c.RunDir, &c.Spec); err != nil {
		return "", false, err
	}
	err := mountOverlay(c, target, upper, work)
	if err == nil {
		return target, true, nil
	}
	if c.Spec.KeepDir != "" {
		return "", false, fmt.Errorf("mount overlay (needed by KeepDir): %w", err)
	}
	if len(c.Spec.Lowers) > 0 {
		// One layer of a stack alone is not the image.
		return "", false, fmt.Errorf("mount overlay (needed by a stack of %d layers: no read-only fallback): %w", len(c.Spec.Lowers)+1, err)
	}
	// No usable overlayfs: a read-only view of the rootfs.
	if err := unix.Mount(c.Spec.Rootfs, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return "", false, &os.PathError{Op: "bind rootfs", Path: c.Spec.Rootfs, Err: err}
	}
	attr := uint64(unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NODEV)
	if !c.Spec.NewPrivileges {
		attr |= unix.MOUNT_ATTR_NOSUID
	}
	if err := unix.MountSetattr(unix.AT_FDCWD, target, unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: attr}); err != nil {
		return "", false, &os.PathError{Op: "remount rootfs read-only", Path: target, Err: err}
	}
	return target, false, nil
}

// writeEtcFiles writes the files bound at /etc/hosts, /etc/hostname and /etc/resolv.conf.
// With the host's network they are the host's; otherwise only loopback exists, so there is
// no DNS server to name.
func writeEtcFiles(dir string, s *Spec) error {
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t" + s.Hostname + "\n"
	resolv := "# imgrun: --net none: no network, no DNS\n"
	if s.Network == NetworkHost {
		if b, err := os.ReadFile("/etc/hosts"); err == nil {
			hosts = string(b)
		}
		if b, err := os.ReadFile("/etc/resolv.conf"); err == nil {
			resolv = string(b)
		}
	}
	files := [][2]string{{"hosts", hosts}, {"hostname", s.Hostname + "\n"}, {"resolv.conf", resolv}}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f[0]), []byte(f[1]), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// overlay is the run's root: read-only layers over a writable one.
type overlay struct {
	lowers      []string // Spec.Rootfs, then Spec.Lowers: top first, as lowerdir lists them
	upper, work string
	volatile    bool // the writable layer is thrown away: never sync it
	userxattr   bool // in a user namespace: overlayfs keeps its xattrs in user.overlay.*
	nosuid      bool
}

// mountOverlay mounts the run's overlay on target. A layer stack goes through the mount API,
// whose options have no length limit (see lowers_linux.go); a single rootfs through mount(2),
// one system call instead of seven.
func mountOverlay(c *initConfig, target, upper, work string) error {
	ov := overlay{
		lowers: append([]string{c.Spec.Rootfs}, c.Spec.Lowers...),
		upper:  upper, work: work,
		// The layer is thrown away: no sync of the upper file system, in particular none at
		// unmount (an ext4 journal commit that costs tens of ms at the end of every run).
		volatile:  c.Spec.KeepDir == "",
		userxattr: c.Userns,
		nosuid:    !c.Spec.NewPrivileges,
	}
	if len(ov.lowers) == 1 {
		return ov.mountClassic(target)
	}
	err := ov.fsmount(target)
	if errors.Is(err, errNoLowerdirAdd) {
		return ov.mountClassic(target)
	}
	return err
}

// mountClassic mounts the overlay with mount(2), whose options must fit in one page.
func (ov overlay) mountClassic(target string) error {
	var links fdLinks
	defer links.close()
	data, err := ov.classicOptions(&links, false)
	if err == nil && len(data) > maxMountData() {
		// A deep stack: every layer named by its /proc/self/fd link, ~18 bytes instead of ~95.
		data, err = ov.classicOptions(&links, true)
	}
	if err != nil {
		return err
	}
	if len(data) > maxMountData() {
		return fmt.Errorf("mount overlay of %d layers: its options are %d bytes, over mount(2)'s limit of %d (a stack this deep needs overlayfs's \"lowerdir+\", Linux 6.8)",
			len(ov.lowers), len(data), maxMountData())
	}
	flags := uintptr(unix.MS_NODEV)
	if ov.nosuid {
		flags |= unix.MS_NOSUID
	}
	if err := unix.Mount("overlay", target, "overlay", flags, data); err != nil {
		return &os.PathError{Op: "mount overlay", Path: target, Err: err}
	}
	return nil
}

// classicOptions returns mount(2)'s option string. Paths with the separators , : \ (or all
// layers, with allLinks) are named by their /proc/self/fd links.
func (ov overlay) classicOptions(links *fdLinks, allLinks bool) (string, error) {
	lowers := make([]string, len(ov.lowers))
	for i, l := range ov.lowers {
		p, err := links.path(l, allLinks)
		if err != nil {
			return "", err
		}
		lowers[i] = p
	}
	up, err := links.path(ov.upper, false)
	if err != nil {
		return "", err
	}
	wk, err := links.path(ov.work, false)
	if err != nil {
		return "", err
	}
	data := "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + up + ",workdir=" + wk
	if ov.volatile {
		data += ",volatile"
	}
	if ov.userxattr {
		data += ",userxattr"
	}
	return data, nil
}

// maxMountData is the longest option string mount(2) takes: it copies one page and cuts the
// string at its last byte.
func maxMountData() int { return os.Getpagesize() - 1 }

// fdLinks names directories by the /proc/self/fd links of O_PATH descriptors, which it keeps
// open until close.
type fdLinks []int

// path returns p itself, unless it has one of the option separators , : \ or always is set:
// then its link.
func (l *fdLinks) path(p string, always bool) (string, error) {
	if !always && !strings.ContainsAny(p, ",:\\") {
		return p, nil
	}
	fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", &os.PathError{Op: "open", Path: p, Err: err}
	}
	*l = append(*l, fd)
	return fdPath(fd), nil
}

func (l *fdLinks) close() {
	for _, fd := range *l {
		unix.Close(fd)
	}
	*l = nil
}

// mountSystem mounts /proc, /sys, /dev, /tmp and the /etc files inside root, then the user's
// bind mounts.
func mountSystem(c *initConfig, root *os.File) error {
	const nsx = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if err := mountAt(root, "proc", true, true, "proc", "proc", nsx, ""); err != nil {
		return err
	}
	if err := maskProc(root); err != nil {
		return err
	}
	if err := mountSys(root); err != nil {
		return err
	}
	if err := mountDev(c, root); err != nil {
		return err
	}
	if err := mountAt(root, "tmp", true, false, "tmpfs", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return err
	}
	// These files are a convenience: where the image's /etc cannot take them (a read-only
	// root without them, or a rootless run over an /etc owned by an unmapped user) they are
	// left out rather than failing the run.
	for _, name := range []string{"hosts", "hostname", "resolv.conf"} {
		src := filepath.Join(c.RunDir, name)
		err := mountAt(root, "etc/"+name, false, false, src, "", unix.MS_BIND, "")
		if errors.Is(err, unix.ENOENT) && removeDangling(root, "etc", name) == nil {
			// e.g. resolv.conf -> ../run/systemd/resolve/stub-resolv.conf: a file takes its place
			err = mountAt(root, "etc/"+name, false, false, src, "", unix.MS_BIND, "")
		}
		if err != nil && !errors.Is(err, unix.EROFS) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EOVERFLOW) {
			return err
		}
	}
	for _, m := range c.Spec.Mounts {
		if err := bindMount(root, m); err != nil {
			return err
		}
	}
	return nil
}

// removeDangling removes dir/name inside root when it is a symlink (in the writable layer).
func removeDangling(root *os.File, dir, name string) error {
	fd, err := openInRoot(root, dir, false)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		return unix.ENOENT
	}
	return unix.Unlinkat(fd, name, 0)
}

// maskProc hides the /proc files docker hides and makes the kernel knobs read-only.
func maskProc(root *os.File) error {
	for _, name := range []string{"kcore", "keys", "timer_list", "sched_debug", "latency_stats"} {
		err := mountExisting(root, "proc/"+name, func(target string) error {
			return unix.Mount("/dev/null", target, "", unix.MS_BIND, "")
		})
		if err != nil {
			return err
		}
	}
	for _, name := range []string{"acpi", "scsi"} {
		err := mountExisting(root, "proc/"+name, func(target string) error {
			return unix.Mount("tmpfs", target, "tmpfs", unix.MS_RDONLY, "size=0")
		})
		if err != nil {
			return err
		}
	}
	for _, name := range []string{"bus", "fs", "irq", "sys", "sysrq-trigger"} {
		bound := false
		err := mountExisting(root, "proc/"+name, func(target string) error {
			bound = true
			return unix.Mount(target, target, "", unix.MS_BIND|unix.MS_REC, "")
		})
		if err != nil {
			return err
		}
		if bound { // the fd above still names the mount below: set the flag on the new one
			if err := setReadOnly(root, "proc/"+name, true); err != nil {
				return err
			}
		}
	}
	return nil
}

// mountExisting calls fn with the magic link of p inside root when p exists (in our fresh procfs).
func mountExisting(root *os.File, p string, fn func(target string) error) error {
	fd, err := openInRoot(root, p, true)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := fn(fdPath(fd)); err != nil {
		return &os.PathError{Op: "mask", Path: "/" + p, Err: err}
	}
	return nil
}

// mountSys mounts a read-only sysfs; in a user namespace that does not own the network
// namespace (--net host without root) the kernel refuses that, and the host's /sys is bound
// read-only instead.
func mountSys(root *os.File) error {
	const ro = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	err := mountAt(root, "sys", true, true, "sysfs", "sysfs", ro, "")
	if err == nil || !errors.Is(err, unix.EPERM) {
		return err
	}
	if err := mountAt(root, "sys", true, true, "/sys", "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	return setReadOnly(root, "sys", true)
}

// devNodes are bound from the host's /dev into the run's /dev (a bind works as root and in a
// user namespace alike; the nodes of the image are never used).
var devNodes = []string{"null", "zero", "full", "random", "urandom", "tty"}

// mountDev mounts a fresh tmpfs on /dev with the standard nodes, devpts, shm and symlinks.
func mountDev(c *initConfig, root *os.File) error {
	if err := mountAt(root, "dev", true, true, "tmpfs", "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=755,size=65536k"); err != nil {
		return err
	}
	devFd, err := openInRoot(root, "dev", true) // the new tmpfs: nothing else can write to it
	if err != nil {
		return err
	}
	defer unix.Close(devFd)
	dev := fdPath(devFd)
	nodes := devNodes
	if c.Spec.TTY {
		nodes = append(nodes[:len(nodes):len(nodes)], "console")
	}
	for _, n := range nodes {
		fd, err := unix.Openat(devFd, n, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o666)
		if err != nil {
			return &os.PathError{Op: "create", Path: "/dev/" + n, Err: err}
		}
		unix.Close(fd)
		src := "/dev/" + n
		if n == "console" { // the pty's slave end, as docker gives -t runs
			if src, err = os.Readlink(fdPath(0)); err != nil {
				return fmt.Errorf("find the terminal for /dev/console: %w", err)
			}
		}
		if err := unix.Mount(src, dev+"/"+n, "", unix.MS_BIND, ""); err != nil {
			return &os.PathError{Op: "bind " + src + " on", Path: "/dev/" + n, Err: err}
		}
	}
	for _, d := range []string{"pts", "shm"} {
		if err := unix.Mkdirat(devFd, d, 0o755); err != nil {
			return &os.PathError{Op: "mkdir", Path: "/dev/" + d, Err: err}
		}
	}
	ptsOpts := "newinstance,ptmxmode=0666,mode=0620"
	if !c.Userns {
		ptsOpts += ",gid=5" // tty group; not mapped in a user namespace
	}
	if err := unix.Mount("devpts", dev+"/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, ptsOpts); err != nil {
		return &os.PathError{Op: "mount devpts on", Path: "/dev/pts", Err: err}
	}
	if err := unix.Mount("shm", dev+"/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size=65536k"); err != nil {
		return &os.PathError{Op: "mount tmpfs on", Path: "/dev/shm", Err: err}
	}
	links := [][2]string{{"pts/ptmx", "ptmx"}, {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
		{"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}}
	for _, l := range links {
		if err := unix.Symlinkat(l[0], devFd, l[1]); err != nil {
			return &os.PathError{Op: "symlink", Path: "/dev/" + l[1], Err: err}
		}
	}
	return nil
}

// bindMount binds a host path into the run; the target is created in-root when missing.
func bindMount(root *os.File, m Mount) error {
	fi, err := os.Stat(m.Source)
	if err != nil {
		return fmt.Errorf("bind mount %s: %w", m.Source, err)
	}
	target := strings.TrimPrefix(filepath.Clean(m.Target), "/")
	if err := mountAt(root, target, fi.IsDir(), false, m.Source, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind mount %s: %w", m.Source, err)
	}
	if m.ReadOnly {
		return setReadOnly(root, target, true)
	}
	return nil
}
