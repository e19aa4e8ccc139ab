package rootfs

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
)

// hideKind is what an entry of a layer does to the same path in the layers below it.
type hideKind uint8

const (
	hideCover   hideKind = iota // an entry at the path replaces lower entries at the path
	hideSubtree                 // a whiteout or non-directory: the path and its subtree go
	hideKids                    // an opaque marker: the subtree goes, the directory stays
)

type hide struct {
	path string
	kind hideKind
}

// layerPass is the state of reading one layer.
type layerPass struct {
	idx    int
	local  map[string]*inode // the latest non-directory inode at each path of this layer; nil for directories
	hides  []hide
	inodes []*inode // inodes created by this layer, in tar order

	entries, total, implied int64 // counted against Limits
}

// layer reads one layer (index idx) and writes what of it is in the final tree.
func (e *exporter) layer(idx int, s *spool) error {
	defer s.release()
	l := &layerPass{idx: idx, local: map[string]*inode{}}
	tr := tar.NewReader(s)
	for pos := 0; ; pos++ {
		if err := e.ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if err := e.entry(l, pos, hdr, tr); err != nil {
			return err
		}
	}
	// Read the stream to its end so that the layer's digest is checked: a mismatch fails the
	// export (whose output so far the caller must then discard).
	if err := s.finish(); err != nil {
		return err
	}
	if err := e.endLayer(l); err != nil {
		return err
	}
	for _, h := range l.hides {
		st := e.state(h.path)
		switch h.kind {
		case hideCover:
			st.cover = min(st.cover, idx)
		case hideSubtree:
			st.subtree = min(st.subtree, idx)
		case hideKids:
			st.kids = min(st.kids, idx)
		}
	}
	return nil
}

// checkEntry rejects what Apply rejects, counts the entry against the limits and reports
// entries that carry no file.
func (e *exporter) checkEntry(l *layerPass, hdr *tar.Header) (skip bool, err error) {
	lim := &e.lim
	l.entries++
	if l.entries > lim.MaxEntries {
		return false, fmt.Errorf("%w: more than %d entries", ErrLimit, lim.MaxEntries)
	}
	if len(hdr.Name) > lim.MaxPathLen || len(hdr.Linkname) > lim.MaxPathLen {
		return false, fmt.Errorf("%w: name or link target longer than %d bytes", ErrLimit, lim.MaxPathLen)
	}
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader, gnuVolumeHeader:
		return true, nil
	case tar.TypeReg, tar.TypeRegA:
		if hdr.Size > lim.MaxFileSize {
			return false, fmt.Errorf("%w: file of %d bytes, more than %d", ErrLimit, hdr.Size, lim.MaxFileSize)
		}
		if l.total += hdr.Size; l.total > lim.MaxTotalBytes {
			return false, fmt.Errorf("%w: more than %d bytes of files", ErrLimit, lim.MaxTotalBytes)
		}
	case tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo, tar.TypeChar, tar.TypeBlock:
	case tar.TypeGNUSparse:
		return false, fmt.Errorf("%w: sparse file", ErrUnsupportedEntry)
	default:
		return false, fmt.Errorf("%w: type %q", ErrUnsupportedEntry, hdr.Typeflag)
	}
	for k, v := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return false, fmt.Errorf("%w: sparse file", ErrUnsupportedEntry)
		}
		if strings.HasPrefix(k, "SCHILY.xattr.") && len(v) > lim.MaxXattrSize {
			return false, fmt.Errorf("%w: xattr %s of %d bytes, more than %d", ErrLimit, k[len("SCHILY.xattr."):], len(v), lim.MaxXattrSize)
		}
	}
	return false, nil
}

// entry handles one tar entry at position pos of layer l; body is its content.
func (e *exporter) entry(l *layerPass, pos int, hdr *tar.Header, body io.Reader) error {
	skip, err := e.checkEntry(l, hdr)
	if err != nil {
		return &EntryError{Name: hdr.Name, Op: "check", Err: err}
	}
	if skip {
		return nil
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return &EntryError{Name: hdr.Name, Op: "check", Err: err}
	}
	if depth := strings.Count(name, "/") + 1; depth > e.lim.MaxPathDepth {
		return &EntryError{Name: hdr.Name, Op: "check", Err: fmt.Errorf("%w: %d path components, more than %d", ErrLimit, depth, e.lim.MaxPathDepth)}
	}
	dir, base := splitName(name)
	if strings.HasPrefix(base, WhiteoutPrefix) {
		return l.whiteout(hdr, dir, base)
	}
	if hasWhiteoutComponent(dir) {
		return &EntryError{Name: hdr.Name, Op: "check", Err: fmt.Errorf("%w: whiteout name used as a directory", ErrUnsafePath)}
	}
	if name == "." {
		// The root is never exported; only its metadata could change, and only by a directory.
		if hdr.Typeflag != tar.TypeDir {
			return &EntryError{Name: hdr.Name, Op: "check", Err: fmt.Errorf("%w: entry of type %q would replace the root", ErrUnsafePath, hdr.Typeflag)}
		}
		return nil
	}
	visible := e.visibleAsOf(name, len(e.layers))
	if err := e.markParents(l, name); err != nil {
		return &EntryError{Name: hdr.Name, Op: "check", Err: err}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := e.bindDir(l, name); err != nil {
			return &EntryError{Name: hdr.Name, Op: "link", Err: err}
		}
		l.local[name] = nil
		l.hides = append(l.hides, hide{name, hideCover})
		if visible {
			return e.write(exportHeader(name, hdr, tar.TypeDir), nil)
		}
		return nil
	case tar.TypeLink:
		target, err := cleanLinkName(hdr.Linkname)
		if err != nil {
			return &EntryError{Name: hdr.Name, Op: "link", Err: err}
		}
		if strings.HasPrefix(target, name+"/") {
			// The entry replaces name, and all below it, before linking.
			return &EntryError{Name: hdr.Name, Op: "link", Err: fmt.Errorf("hard link target %q: %w", target, fs.ErrNotExist)}
		}
		in, ok := l.local[target]
		switch {
		case ok && in == nil:
			return &EntryError{Name: hdr.Name, Op: "link", Err: fmt.Errorf("hard link to directory %q", target)}
		case !ok:
			in = &inode{target: target, asOf: l.idx}
			e.pending[target] = append(e.pending[target], in)
		}
		if err := e.bind(l, name, in); err != nil {
			return &EntryError{Name: hdr.Name, Op: "link", Err: err}
		}
		l.local[name] = in
		l.hides = append(l.hides, hide{name, hideSubtree})
		if visible {
			// Written now if what it links to was, else right after it is.
			return e.addWaiters(in, []string{name})
		}
		return nil
	}

	in := &inode{hdr: hdr, layer: l.idx, pos: pos}
	if hdr.Typeflag == tar.TypeRegA {
		hdr.Typeflag = tar.TypeReg
	}
	if err := e.bind(l, name, in); err != nil {
		return &EntryError{Name: hdr.Name, Op: "link", Err: err}
	}
	l.local[name] = in
	l.inodes = append(l.inodes, in)
	l.hides = append(l.hides, hide{name, hideSubtree})
	if hdr.Typeflag != tar.TypeReg {
		body = nil
	}
	switch {
	case visible:
		return e.emit(in, name, body)
	case len(in.waiters) > 0:
		// The path was replaced above, but hard links made before that keep the content.
		rep := in.waiters[0]
		in.waiters = in.waiters[1:]
		return e.emit(in, rep, body)
	}
	return nil
}

// whiteout records a .wh. entry; it only affects lower layers.
func (l *layerPass) whiteout(hdr *tar.Header, dir, base string) error {
	switch {
	case base == OpaqueWhiteout:
		if dir == "" {
			dir = "."
		}
		l.hides = append(l.hides, hide{dir, hideKids})
		return nil
	case strings.HasPrefix(base, WhiteoutMetaPrefix):
		return nil // aufs metadata (.wh..wh.plnk, ...): not a file
	}
	target := base[len(WhiteoutPrefix):]
	if target == "" || target == "." || target == ".." {
		return &EntryError{Name: hdr.Name, Op: "whiteout", Err: fmt.Errorf("%w: invalid whiteout", ErrUnsafePath)}
	}
	if hasWhiteoutComponent(dir) {
		return &EntryError{Name: hdr.Name, Op: "check", Err: fmt.Errorf("%w: whiteout name used as a directory", ErrUnsafePath)}
	}
	if dir != "" {
		target = dir + "/" + target
	}
	l.hides = append(l.hides, hide{target, hideSubtree})
	return nil
}

// endLayer writes the inodes of this layer that were replaced above but that hard links still
// reach: content-less ones now, regular files by reading the layer again.
func (e *exporter) endLayer(l *layerPass) error {
	var reread []*inode
	for _, in := range l.inodes {
		if in.rep != "" || len(in.waiters) == 0 {
			continue
		}
		if in.hdr.Typeflag == tar.TypeReg {
			reread = append(reread, in)
			continue
		}
		rep := in.waiters[0]
		in.waiters = in.waiters[1:]
		if err := e.emit(in, rep, nil); err != nil {
			return err
		}
	}
	if len(reread) > 0 {
		return e.reread(l.idx, reread)
	}
	return nil
}

// reread reads layer idx again for the content of files that were replaced in a higher layer
// and skipped, but that a hard link later in the same layer turned out to need. It is rare
// (a layer that links to a file, then a higher layer that replaces the file but not the link).
func (e *exporter) reread(idx int, want []*inode) error {
	rc, err := e.layers[idx].Uncompressed(e.ctx)
	if err != nil {
		return fmt.Errorf("reopen layer: %w", err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	next := 0
	for pos := 0; next < len(want); pos++ {
		if _, err := tr.Next(); err != nil {
			if err == io.EOF {
				err = errors.New("layer changed between reads")
			}
			return fmt.Errorf("reread layer: %w", err)
		}
		if pos != want[next].pos {
			continue
		}
		in := want[next]
		next++
		rep := in.waiters[0]
		in.waiters = in.waiters[1:]
		if err := e.emit(in, rep, tr); err != nil {
			return err
		}
	}
	// Drain, so that the bytes just written are checked against the layer's digest too.
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return fmt.Errorf("reread layer: %w", err)
	}
	return nil
}

// gnuVolumeHeader is GNU tar's volume label type flag, which archive/tar does not name.
const gnuVolumeHeader = 'V'
