package layers

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/opencontainers/go-digest"
)

const (
	// pipeChunks × pipeChunkSize is the read-ahead of one open layer: enough to keep
	// the decoder busy while the consumer writes files, small enough that several layers
	// open at once stay far below imgrun's memory budget.
	pipeChunks    = 4
	pipeChunkSize = 512 << 10
	// closeDrainLimit is how much of an unread stream Close still decodes to reach EOF
	// and verify it: tar readers stop before the zero padding at the end of an archive.
	closeDrainLimit = 1 << 20
)

// errNotVerified is what Close reports for a stream abandoned before its end.
var errNotVerified = errors.New("layer closed before its end: content not verified")

type chunk struct {
	buf []byte
	n   int
	err error // io.EOF on success, or why the stream failed; set on the last chunk
}

// pipe runs decompression and hashing in a goroutine and hands the consumer filled chunks
// through a bounded queue; buffers go back through free, so memory stays at pipeChunks
// chunks whatever the layer size.
type pipe struct {
	full    chan chunk
	free    chan []byte
	stop    chan struct{}
	stopped sync.WaitGroup
	cleanup func()

	cur    []byte // unread part of the current chunk
	curBuf []byte // the buffer cur belongs to
	err    error  // sticky: set once the last chunk arrived
	closed bool
}

// startPipe decodes dec in a goroutine, hashing it against diffID. compressed is the reader
// under the decoder: it is drained after the decoder's EOF so that trailing bytes are
// read. cleanup runs once the goroutine ended.
func startPipe(ctx context.Context, dec, compressed io.Reader, diffID digest.Digest, cleanup func()) *pipe {
	p := &pipe{
		full:    make(chan chunk, pipeChunks),
		free:    make(chan []byte, pipeChunks),
		stop:    make(chan struct{}),
		cleanup: cleanup,
	}
	for range pipeChunks {
		p.free <- make([]byte, pipeChunkSize)
	}
	p.stopped.Add(1)
	go p.produce(ctx, dec, compressed, diffID)
	return p
}

func (p *pipe) produce(ctx context.Context, dec, compressed io.Reader, diffID digest.Digest) {
	defer p.stopped.Done()
	h := sha256.New()
	for {
		var buf []byte
		select {
		case buf = <-p.free:
		case <-p.stop:
			return
		}
		n, err := io.ReadFull(dec, buf)
		h.Write(buf[:n])
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			err = finish(compressed, diffID, digest.NewDigest(digest.SHA256, h))
		case err == nil:
			err = ctx.Err()
		}
		select {
		case p.full <- chunk{buf: buf, n: n, err: err}:
		case <-p.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// finish runs at the decoder's EOF: it drains what is left of the compressed stream and
// compares the uncompressed digest.
func finish(compressed io.Reader, diffID, got digest.Digest) error {
	if _, err := io.Copy(io.Discard, compressed); err != nil {
		return err
	}
	if got != diffID {
		return &DigestError{What: "layer diffID", Want: diffID, Got: got}
	}
	return io.EOF
}

// Read returns the uncompressed bytes; at the end io.EOF only when everything verified.
func (p *pipe) Read(b []byte) (int, error) {
	for len(p.cur) == 0 {
		if p.err != nil {
			return 0, p.err
		}
		if p.closed {
			return 0, errors.New("read after close")
		}
		if p.curBuf != nil {
			p.free <- p.curBuf // never blocks: there are only pipeChunks buffers
			p.curBuf = nil
		}
		c := <-p.full
		p.curBuf, p.cur = c.buf, c.buf[:c.n]
		if c.err != nil {
			p.err = c.err
			if !errors.Is(c.err, io.EOF) {
				p.err = fmt.Errorf("decompress: %w", c.err)
			}
		}
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

// Close stops the decoding goroutine and releases the blob. When the stream was read to
// (nearly) its end it returns the verification result, else errNotVerified.
func (p *pipe) Close() error {
	if p.closed {
		return nil
	}
	var result error
	if p.err == nil {
		// Finish a stream read almost to the end, so that its digests are checked.
		n, err := io.CopyN(io.Discard, p, closeDrainLimit)
		switch {
		case err == nil && n == closeDrainLimit:
			result = errNotVerified
		case err != nil && !errors.Is(err, io.EOF):
			result = err
		}
	} else if !errors.Is(p.err, io.EOF) {
		result = p.err
	}
	p.closed = true
	close(p.stop)
	p.stopped.Wait()
	p.cleanup()
	return result
}

// ReadsAhead reports that the stream decodes in its own goroutine, a bounded number of bytes
// ahead of its reader: a consumer (pkg/rootfs's layer pipeline) need not add a goroutine and
// a copy of its own to overlap decompression with its work.
func (p *pipe) ReadsAhead() bool { return true }
