package layers

import (
	"crypto/sha256"
	"fmt"
	"hash"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// verifier is a reader that hashes what passes through it, refuses more than Size bytes
// and, at EOF, returns ErrSizeMismatch or a *DigestError instead of io.EOF when the bytes
// are not the ones the descriptor names. Verification is a reader, not a step: whoever
// reads to the end has checked the bytes.
type verifier struct {
	rc   io.ReadCloser
	desc ocispec.Descriptor
	what string
	h    hash.Hash
	n    int64
	err  error // sticky result once EOF or a mismatch was seen
}

func newVerifier(rc io.ReadCloser, desc ocispec.Descriptor, what string) *verifier {
	return &verifier{rc: rc, desc: desc, what: what, h: sha256.New()}
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	// Never read more than one byte past the declared size (an endless body stops here).
	if room := v.desc.Size + 1 - v.n; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := v.rc.Read(p)
	v.n += int64(n)
	if v.n > v.desc.Size {
		v.err = fmt.Errorf("%s %s: more than %d bytes: %w", v.what, v.desc.Digest, v.desc.Size, ErrSizeMismatch)
		return 0, v.err
	}
	v.h.Write(p[:n])
	if err == io.EOF {
		err = v.check()
		v.err = err
	}
	return n, err
}

func (v *verifier) check() error {
	if v.n != v.desc.Size {
		return fmt.Errorf("%s %s: got %d bytes, want %d: %w", v.what, v.desc.Digest, v.n, v.desc.Size, ErrSizeMismatch)
	}
	if got := digest.NewDigest(digest.SHA256, v.h); got != v.desc.Digest {
		return &DigestError{What: v.what, Want: v.desc.Digest, Got: got}
	}
	return io.EOF
}

func (v *verifier) Close() error { return v.rc.Close() }
