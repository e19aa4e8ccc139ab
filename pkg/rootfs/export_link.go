package rootfs

import (
	"archive/tar"
	"fmt"
	"io"
)

// inode is one file of the flattened tree as hard links see it: created by a regular file,
// symlink, device or FIFO entry and shared by every hard link made to it before a higher layer
// replaced its path. A hard link to a path in a lower layer first gets a placeholder (target,
// asOf), bound by fwd to the real inode once the lower layers are read.
type inode struct {
	fwd *inode

	hdr        *tar.Header // the creating entry; nil for a placeholder
	layer, pos int         // where hdr is: layer index, entry position

	target string // placeholder: the link target's path
	asOf   int    // placeholder: the layer of the link; the target is what lies below it

	rep     string   // the path it was written under; "" until then
	waiters []string // final paths of hard links to write once rep is known
}

func (n *inode) find() *inode {
	for n.fwd != nil {
		n = n.fwd
	}
	return n
}

// bind binds the placeholders waiting for name to in, the inode that the entry at name in
// layer l gives, for each placeholder whose link was made when this entry was still there.
func (e *exporter) bind(l *layerPass, name string, in *inode) error {
	phs := e.pending[name]
	if len(phs) == 0 {
		return nil
	}
	keep := phs[:0]
	for _, ph := range phs {
		if ph.asOf <= l.idx || !e.visibleAsOf(name, ph.asOf) {
			keep = append(keep, ph)
			continue
		}
		ph.fwd = in
		w := ph.waiters
		ph.waiters = nil
		if err := e.addWaiters(in, w); err != nil {
			return err
		}
	}
	if len(keep) == 0 {
		delete(e.pending, name)
	} else {
		e.pending[name] = keep
	}
	return nil
}

// bindDir fails if a hard link from a higher layer targets the directory name.
func (e *exporter) bindDir(l *layerPass, name string) error {
	for _, ph := range e.pending[name] {
		if ph.asOf > l.idx && e.visibleAsOf(name, ph.asOf) {
			return fmt.Errorf("hard link to directory %q", name)
		}
	}
	return nil
}

// addWaiters writes hard links named names to in now if it was written, or once it is.
func (e *exporter) addWaiters(in *inode, names []string) error {
	in = in.find()
	if in.rep == "" {
		in.waiters = append(in.waiters, names...)
		return nil
	}
	for _, n := range names {
		if err := e.writeLink(n, in); err != nil {
			return err
		}
	}
	return nil
}

// emit writes in under name (with body for a regular file), then the hard links waiting for
// it. If in was already written under another name, name becomes a hard link to it.
func (e *exporter) emit(in *inode, name string, body io.Reader) error {
	in = in.find()
	if in.rep != "" {
		return e.writeLink(name, in)
	}
	in.rep = name
	if err := e.write(exportHeader(name, in.hdr, in.hdr.Typeflag), body); err != nil {
		return err
	}
	w := in.waiters
	in.waiters = nil
	for _, n := range w {
		if err := e.writeLink(n, in); err != nil {
			return err
		}
	}
	return nil
}

func (e *exporter) writeLink(name string, in *inode) error {
	h := exportHeader(name, in.hdr, tar.TypeLink)
	h.Linkname = in.rep
	return e.write(h, nil)
}
