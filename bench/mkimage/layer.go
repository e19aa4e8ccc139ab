package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Overlayfs marks a deleted entry in an upper dir with a 0:0 character device and a directory
// that hides everything below it with this xattr; OCI layers say the same with .wh. files.
const (
	opaqueXattr    = "trusted.overlay.opaque"
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// layerStats counts what went into one layer.
type layerStats struct {
	Entries   int // tar headers written, whiteouts included
	Whiteouts int // .wh.NAME entries
	Opaque    int // .wh..wh..opq entries
	Bytes     int64
}

// layerWriter turns one directory tree into a tar stream. Upper dirs of an overlay mount are
// converted (whiteout devices and opaque xattrs); the base tree is taken as it is.
type layerWriter struct {
	root     string
	upper    bool
	excludes []string // slash-separated globs on the path relative to root
	tw       *tar.Writer
	links    map[fileID]string // first path of each multiply-linked regular file
	stats    layerStats
}

type fileID struct{ dev, ino uint64 }

// writeTar writes dir as an uncompressed tar stream to w.
func writeTar(ctx context.Context, w io.Writer, dir string, upper bool, excludes []string) (layerStats, error) {
	lw := &layerWriter{root: dir, upper: upper, excludes: excludes, tw: tar.NewWriter(w), links: map[fileID]string{}}
	if err := lw.walk(ctx); err != nil {
		return lw.stats, fmt.Errorf("layer %s: %w", dir, err)
	}
	if err := lw.tw.Close(); err != nil {
		return lw.stats, fmt.Errorf("layer %s: close tar: %w", dir, err)
	}
	return lw.stats, nil
}

// walk visits the tree in lexical order (filepath.WalkDir sorts each directory), so the same
// tree always gives the same bytes.
func (lw *layerWriter) walk(ctx context.Context) error {
	return filepath.WalkDir(lw.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(lw.root, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if lw.excluded(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		return lw.entry(p, rel, d)
	})
}

func (lw *layerWriter) excluded(rel string) bool {
	for _, g := range lw.excludes {
		if ok, _ := path.Match(g, rel); ok {
			return true
		}
	}
	return false
}

func (lw *layerWriter) entry(p, rel string, d fs.DirEntry) error {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return &fs.PathError{Op: "lstat", Path: p, Err: err}
	}
	if lw.upper && st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0 {
		dir, name := path.Split(rel)
		lw.stats.Whiteouts++
		return lw.write(&tar.Header{Typeflag: tar.TypeReg, Name: dir + whiteoutPrefix + name, Mode: 0o644,
			ModTime: timespec(st.Mtim), Format: tar.FormatPAX}, nil)
	}
	hdr, err := lw.header(p, rel, &st)
	if err != nil || hdr == nil {
		return err
	}
	if hdr.Typeflag == tar.TypeReg {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := lw.write(hdr, f); err != nil {
			return err
		}
		lw.stats.Bytes += hdr.Size
		return nil
	}
	if err := lw.write(hdr, nil); err != nil {
		return err
	}
	if lw.upper && d.IsDir() && xattr(p, opaqueXattr) == "y" {
		// The marker follows its directory so that a reader that applies entries in order
		// clears the lower contents before this layer's children arrive.
		lw.stats.Opaque++
		return lw.write(&tar.Header{Typeflag: tar.TypeReg, Name: rel + "/" + opaqueMarker, Mode: 0o644,
			ModTime: hdr.ModTime, Format: tar.FormatPAX}, nil)
	}
	return nil
}

// header describes one file the way docker's archive package does: numeric ids, no names,
// the file's own mtime, security.* and user.* xattrs as PAX records.
func (lw *layerWriter) header(p, rel string, st *unix.Stat_t) (*tar.Header, error) {
	h := &tar.Header{
		Name:    rel,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: timespec(st.Mtim),
		Format:  tar.FormatPAX,
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		h.Typeflag, h.Name = tar.TypeDir, rel+"/"
	case unix.S_IFREG:
		id := fileID{uint64(st.Dev), st.Ino}
		if st.Nlink > 1 {
			if first, ok := lw.links[id]; ok {
				h.Typeflag, h.Linkname = tar.TypeLink, first
				return h, nil
			}
			lw.links[id] = rel
		}
		h.Typeflag, h.Size = tar.TypeReg, st.Size
	case unix.S_IFLNK:
		target, err := os.Readlink(p)
		if err != nil {
			return nil, err
		}
		h.Typeflag, h.Linkname = tar.TypeSymlink, target
	case unix.S_IFCHR, unix.S_IFBLK:
		h.Typeflag = tar.TypeChar
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			h.Typeflag = tar.TypeBlock
		}
		h.Devmajor, h.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		h.Typeflag = tar.TypeFifo
	default: // sockets have no place in an image
		return nil, nil
	}
	for _, name := range listXattrs(p) {
		if strings.HasPrefix(name, "security.") || strings.HasPrefix(name, "user.") {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+name] = xattr(p, name)
		}
	}
	return h, nil
}

func (lw *layerWriter) write(h *tar.Header, body io.Reader) error {
	if err := lw.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	lw.stats.Entries++
	if body == nil {
		return nil
	}
	n, err := io.Copy(lw.tw, body)
	if err == nil && n != h.Size {
		err = errors.New("file changed size while being read")
	}
	if err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	return nil
}
