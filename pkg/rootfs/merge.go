package rootfs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// buildParallel builds the tree of layers in tmp (which exists and is empty) by applying the
// layers concurrently, each into its own directory (tmp/0, tmp/1, …, upper mode), and
// merging them in order into tmp/0 as overlayfs would show them. It returns the tree,
// tmp/0. A layer that needs the layers below it fails it with [ErrNeedsLowers]: the caller
// applies the layers one after the other instead.
//
// The merge moves whole subtrees with rename(2) where the lower tree has nothing, so it costs
// a rename per name that lands in an existing directory, not a copy.
func buildParallel(ctx context.Context, tmp string, layers []Layer, o *applyOptions) (string, error) {
	set := newLayerSet(layers, o)
	build := make([]int, len(layers))
	for i := range layers {
		set.dirs[i] = filepath.Join(tmp, fmt.Sprint(i))
		if err := os.Mkdir(set.dirs[i], 0o700); err != nil {
			return "", err
		}
		build[i] = i
	}
	if err := set.build(ctx, build, tmp); err != nil {
		return "", err
	}
	start := time.Now()
	if err := mergeLayers(ctx, set.dirs, set.states, o); err != nil {
		return "", err
	}
	o.logger.Debug("layers merged", "took", time.Since(start).Round(time.Millisecond))
	return set.dirs[0], nil
}

// mergeLayers merges the complete upper-mode layers dirs[1:] into dirs[0], in order, by
// overlayfs' rules, then removes the opaque marks the merged tree still carries.
func mergeLayers(ctx context.Context, dirs []string, states []*upperState, o *applyOptions) error {
	baseFd, err := unix.Open(dirs[0], unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	a := newApplier(o, baseFd) // closes baseFd
	defer a.close()
	for k := 1; k < len(dirs); k++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		ufd, err := unix.Open(dirs[k], unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		err = a.mergeDir(baseFd, ufd, "")
		if err == nil {
			err = copyMetaFd(ufd, baseFd)
		}
		unix.Close(ufd)
		if err != nil {
			return fmt.Errorf("merge layer %d: %w", k+1, err)
		}
	}
	for _, st := range states {
		for _, n := range st.opaque {
			fd, err := resolveInRootHow(baseFd, n, 0, unix.RESOLVE_NO_SYMLINKS)
			if err != nil {
				continue // gone, or replaced by something else
			}
			err = unix.Removexattr(procFd(fd), overlayOpaqueXattr)
			unix.Close(fd)
			if err != nil && err != unix.ENODATA {
				return fmt.Errorf("unmark %q: %w", "/"+n, err)
			}
		}
	}
	return nil
}

// mergeDir moves the entries of the upper directory ufd into the tree directory bfd (name is
// its name in the tree, for errors): a whiteout removes the name, a directory over a
// directory merges into it (unless opaque), anything else replaces what is there.
func (a *applier) mergeDir(bfd, ufd int, name string) error {
	ents, err := readDir(ufd)
	if err != nil {
		return fmt.Errorf("%q: %w", "/"+name, err)
	}
	for _, e := range ents {
		p := joinName(name, e.name)
		var ust, bst unix.Stat_t
		if err := unix.Fstatat(ufd, e.name, &ust, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("%q: %w", "/"+p, err)
		}
		if isWhiteoutDev(&ust) {
			if err := a.removeAllAt(bfd, e.name); err != nil {
				return fmt.Errorf("remove %q: %w", "/"+p, err)
			}
			continue
		}
		berr := unix.Fstatat(bfd, e.name, &bst, unix.AT_SYMLINK_NOFOLLOW)
		if berr != nil && berr != unix.ENOENT {
			return fmt.Errorf("%q: %w", "/"+p, berr)
		}
		exists := berr == nil
		if ust.Mode&unix.S_IFMT == unix.S_IFDIR && exists && bst.Mode&unix.S_IFMT == unix.S_IFDIR {
			merged, err := a.mergeSubdir(bfd, ufd, e.name, p)
			if err != nil {
				return err
			}
			if merged {
				continue
			}
		}
		if exists {
			if err := a.removeAllAt(bfd, e.name); err != nil {
				return fmt.Errorf("replace %q: %w", "/"+p, err)
			}
		}
		if err := unix.Renameat(ufd, e.name, bfd, e.name); err != nil {
			return fmt.Errorf("move %q: %w", "/"+p, err)
		}
	}
	return nil
}

// mergeSubdir merges the upper directory base of ufd into the tree's directory base of bfd,
// unless the upper one is opaque (merged false: it replaces the tree's).
func (a *applier) mergeSubdir(bfd, ufd int, base, p string) (merged bool, err error) {
	usub, err := unix.Openat(ufd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("%q: %w", "/"+p, err)
	}
	defer unix.Close(usub)
	buf := make([]byte, 4)
	if n, err := unix.Fgetxattr(usub, overlayOpaqueXattr, buf); err == nil && string(buf[:n]) == overlayOpaqueOnDisk {
		return false, nil
	}
	bsub, err := unix.Openat(bfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("%q: %w", "/"+p, err)
	}
	defer unix.Close(bsub)
	if err := a.mergeDir(bsub, usub, p); err != nil {
		return false, err
	}
	if err := copyMetaFd(usub, bsub); err != nil {
		return false, fmt.Errorf("%q: %w", "/"+p, err)
	}
	return true, nil
}

// copyMetaFd gives the directory dst the owner, mode, xattrs (overlay ones excepted) and
// times of the directory src, as a directory entry over an existing directory does in a flat
// Apply (the tree's other xattrs stay, as there).
func copyMetaFd(src, dst int) error { return copyMeta(src, dst, true) }
