// Package rootfs turns image layers into a root filesystem: [Apply] applies one uncompressed
// layer tar onto a directory, [Flatten] applies an image's layers in order into a new tree, and
// [Export] streams the flattened result as one tar.
//
// # How do I use this package?
//
// To unpack an image, call [Flatten] with the image's layers (pkg/layers' Layer satisfies
// [Layer]). To apply a single layer tar you already hold, call [Apply]. To run an image, call
// [Cache.Snapshots]: it keeps each layer once, as an overlayfs layer shared by every image on
// the same base, and returns the stack for pkg/run's Spec.Rootfs and Spec.Lowers.
//
// As root, Flatten and Cache.Snapshots apply an image's layers concurrently, each into its own
// directory as an overlayfs layer (whiteouts as whiteout devices, opaque markers as opaque
// xattrs), and complete each against the layers below; Flatten then merges them into one
// tree. A layer whose effect depends on the layers below in a way an overlay cannot express
// ([ErrNeedsLowers]: it writes through a symlink, hard-links a lower file, ...) makes Flatten
// apply the layers one after the other instead; the result is the same tree either way.
// docs/PERFORMANCE.md has the design and the measurements.
//
// # Semantics
//
// Layers follow the OCI image-spec (layer.md) and Docker where the spec is silent:
//
//   - DIR/.wh.NAME removes NAME (a file, a whole tree, or a symlink itself) left by lower layers.
//     Whiteouts only apply to lower layers: what the whiteout's own layer put at NAME before it
//     stays (a file or symlink there already replaced the lower one; a directory the layer
//     listed or wrote into loses its lower contents only, as if opaque). A whiteout before
//     NAME's entry removes the lower NAME, then the entry creates it anew.
//   - DIR/.wh..wh..opq hides everything lower layers had in DIR and keeps what the same layer puts
//     there, wherever the marker appears in the tar. Other .wh..wh.* names are skipped. No
//     whiteout file ever appears in the result.
//   - A directory below a hidden one that the layer writes into but does not list gets the
//     metadata of a parent created for an entry below it (0755, 0:0, no xattrs), not the
//     hidden lower directory's. What a layer created is known by where it really is (resolved
//     through symlinks), so an opaque marker or whiteout under another name than the one the
//     layer wrote through still keeps the layer's own entries.
//   - A later entry replaces an earlier one of another type (file, directory, symlink); a
//     directory entry over a directory keeps its contents and only updates metadata. Duplicate
//     entries: the last wins.
//   - Every path is resolved as if chrooted into the root: ".." and absolute symlink targets stop
//     at the root, so a layer that writes through a symlink lands inside the root. Resolution is
//     enforced by the kernel (openat2 with RESOLVE_IN_ROOT); the last component is created or
//     changed relative to its parent directory's fd and is never followed. Entry names that
//     escape (../x), are empty, contain NUL, or end in "." or ".." are rejected with
//     [ErrUnsafePath]; absolute names are taken relative to the root. An entry naming the root
//     itself may only be a directory (its metadata is applied); the root is never replaced.
//   - Hard links resolve their target in the root (an absolute target is relative to the root);
//     the target must be an existing non-directory. A hard link to a symlink links the symlink
//     itself. Metadata of a hard-link entry is not applied: the linked inode keeps its own.
//   - Modes (including setuid, setgid, sticky, applied after chown), owners (as root), mtimes
//     (directories' mtimes after their contents, at the end of each layer) and the xattrs user.*
//     and, as root, security.capability are applied (to regular files and directories: the kernel
//     allows user.* nowhere else). trusted.*, security.selinux and overlay xattrs
//     (trusted.overlay.*, user.overlay.*) are dropped.
//   - Character and block devices are created only as root; otherwise they are skipped with one
//     warning per Apply. Sparse entries and unknown entry types are errors; PAX global headers
//     and GNU volume headers are skipped.
//
// # Rootless
//
// When not running as root (euid != 0) files belong to the caller. The owner the image asked for
// is kept in the user.rootlesscontainers xattr, in umoci's format (the protobuf message
// rootlesscontainers.Resource{uint32 uid = 1; uint32 gid = 2}, 0 written as 0xFFFFFFFF and the
// xattr omitted for 0:0), written before the final mode so that read-only files and
// directories get it too. Modes are kept as the image says, including setuid bits: the cache
// directory above the rootfs is 0700. Directories the image makes non-writable still receive
// their contents: they are made u+rwx while a layer is applied and get their final mode at the
// end of that layer.
package rootfs

import (
	"context"
	"errors"
	"fmt"
	"io"
)

const (
	// WhiteoutPrefix marks an entry that deletes the path named by the rest of its base name.
	WhiteoutPrefix = ".wh."
	// WhiteoutMetaPrefix starts the names reserved for markers (aufs .wh..wh.plnk etc.).
	WhiteoutMetaPrefix = WhiteoutPrefix + WhiteoutPrefix
	// OpaqueWhiteout in a directory hides everything lower layers had in that directory.
	OpaqueWhiteout = WhiteoutMetaPrefix + ".opq"
)

var (
	// ErrUnsafePath reports an entry whose name or link target is not a path inside the root.
	ErrUnsafePath = errors.New("unsafe path in layer")
	// ErrNotEmpty reports a target directory that must be new or empty but is not.
	ErrNotEmpty = errors.New("directory not empty")
	// ErrLimit reports a layer that exceeds one of the configured [Limits].
	ErrLimit = errors.New("layer exceeds limit")
	// ErrUnsupportedEntry reports a tar entry type imgrun does not apply (sparse files, unknown
	// type flags).
	ErrUnsupportedEntry = errors.New("unsupported tar entry")
)

// EntryError reports a failure to apply one tar entry. Name is the entry's name as it appears
// in the tar, Op what was being done ("create", "link", "whiteout", "chmod", ...).
type EntryError struct {
	Name string
	Op   string
	Err  error
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("apply entry %q: %s: %v", e.Name, e.Op, e.Err)
}

func (e *EntryError) Unwrap() error { return e.Err }

// Layer is one image layer whose uncompressed tar can be read. pkg/layers' Layer satisfies it.
type Layer interface {
	Uncompressed(ctx context.Context) (io.ReadCloser, error)
}
