package registry

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// endpoint is one place a registry reference can be served from: a mirror or the origin.
type endpoint struct {
	label  string // for messages and logs
	reg    name.Registry
	mirror bool

	mu     sync.Mutex
	client *http.Client // authenticated; set on first successful use
}

// remoteSource serves a registry reference, trying mirrors (Docker Hub only) before the origin.
type remoteSource struct {
	c   *Client
	ref Reference
	eps []*endpoint

	mu        sync.Mutex
	preferred int // endpoint that served the manifest; blobs are fetched there first
}

func (c *Client) openRemote(ref Reference) (Source, error) {
	if ref.Registry == "" || ref.Repository == "" || (ref.Tag == "" && ref.Digest == "") {
		return nil, fmt.Errorf("open %s: incomplete reference: %w", ref, ErrBadReference)
	}
	s := &remoteSource{c: c, ref: ref}
	if ref.IsDockerHub() {
		for _, m := range c.mirrors {
			opts := []name.Option{}
			if m.Scheme == "http" {
				opts = append(opts, name.Insecure)
			}
			reg, err := name.NewRegistry(m.Host, opts...)
			if err != nil {
				return nil, fmt.Errorf("mirror %s: %v: %w", m, err, ErrBadReference)
			}
			s.eps = append(s.eps, &endpoint{label: "mirror " + m.String(), reg: reg, mirror: true})
		}
	}
	opts := []name.Option{}
	if c.insecure[ref.Registry] {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(ref.Registry, opts...)
	if err != nil {
		return nil, fmt.Errorf("open %s: %v: %w", ref, err, ErrBadReference)
	}
	s.eps = append(s.eps, &endpoint{label: ref.Registry, reg: reg})
	return s, nil
}

func (s *remoteSource) Reference() Reference { return s.ref }

// Resolve tries each endpoint in order (mirrors, then the origin) and reports the first success.
func (s *remoteSource) Resolve(ctx context.Context, platform ocispec.Platform, known KnownFunc) (*Image, error) {
	var errs []error
	for i, ep := range s.eps {
		img, err := resolve(ctx, &remoteBackend{s: s, ep: ep}, s.ref, platform, known)
		if err == nil {
			s.mu.Lock()
			s.preferred = i
			s.mu.Unlock()
			if ep.mirror {
				s.c.log.Info("resolved through mirror", "ref", s.ref.String(), "mirror", ep.label, "digest", img.Descriptor.Digest)
			} else {
				s.c.log.Debug("resolved", "ref", s.ref.String(), "registry", ep.label, "digest", img.Descriptor.Digest)
			}
			return img, nil
		}
		if ctx.Err() != nil || !ep.mirror {
			if len(errs) > 0 {
				s.c.log.Warn("all mirrors failed", "ref", s.ref.String(), "errors", errors.Join(errs...).Error())
			}
			return nil, fmt.Errorf("resolve %s: %w", s.ref, err)
		}
		s.c.log.Warn("mirror failed, trying the next", "ref", s.ref.String(), "mirror", ep.label, "err", err.Error())
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("resolve %s: no endpoint", s.ref)
}

// Fetch streams a blob from the endpoint that served the manifest, falling back to the
// others if it fails before the body starts.
func (s *remoteSource) Fetch(ctx context.Context, desc ocispec.Descriptor, offset int64) (io.ReadCloser, int64, error) {
	if err := checkDescriptor(desc); err != nil {
		return nil, 0, fmt.Errorf("fetch %s: %w", desc.Digest, err)
	}
	s.mu.Lock()
	first := s.preferred
	s.mu.Unlock()
	order := []*endpoint{s.eps[first]}
	for i, ep := range s.eps {
		if i != first {
			order = append(order, ep)
		}
	}
	var err error
	for _, ep := range order {
		var rc io.ReadCloser
		var start int64
		rc, start, err = s.fetchFrom(ctx, ep, desc, offset)
		if err == nil {
			return rc, start, nil
		}
		if ctx.Err() != nil {
			break
		}
		if len(s.eps) > 1 {
			s.c.log.Warn("blob fetch failed", "digest", desc.Digest, "endpoint", ep.label, "err", err.Error())
		}
	}
	return nil, 0, err
}

func (s *remoteSource) fetchFrom(ctx context.Context, ep *endpoint, desc ocispec.Descriptor, offset int64) (io.ReadCloser, int64, error) {
	what := fmt.Sprintf("blob %s of %s", desc.Digest, s.ref.Name())
	hdr := http.Header{}
	ranged := offset > 0 && desc.Size > 0 && offset < desc.Size
	if ranged {
		hdr.Set("Range", fmt.Sprintf("bytes=%d-%d", offset, desc.Size-1))
	}
	resp, err := s.do(ctx, ep, http.MethodGet, "blobs/"+desc.Digest.String(), hdr, what)
	var se *statusError
	if ranged && errors.As(err, &se) && se.Code == http.StatusRequestedRangeNotSatisfiable {
		ranged = false
		resp, err = s.do(ctx, ep, http.MethodGet, "blobs/"+desc.Digest.String(), nil, what)
	}
	if err != nil {
		return nil, 0, err
	}
	var start int64
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if !ranged {
			resp.Body.Close()
			return nil, 0, fmt.Errorf("%s: unrequested partial content", what)
		}
		got, ok := contentRangeStart(resp.Header.Get("Content-Range"))
		if !ok || got != offset {
			resp.Body.Close()
			return nil, 0, fmt.Errorf("%s: asked for bytes from %d, server sent Content-Range %q", what, offset, sanitize(resp.Header.Get("Content-Range")))
		}
		start = got
	case http.StatusOK:
		start = 0
	default:
		resp.Body.Close()
		return nil, 0, fmt.Errorf("%s: unexpected HTTP %d", what, resp.StatusCode)
	}
	if desc.Size > 0 {
		want := desc.Size - start
		if resp.ContentLength > want {
			resp.Body.Close()
			return nil, 0, fmt.Errorf("%s: server announces %d bytes, descriptor says %d: %w", what, resp.ContentLength, want, ErrDigestMismatch)
		}
		// An endless body is cut one byte past the expected size, so the caller's size
		// check fails instead of writing forever.
		return readCloser{io.LimitReader(resp.Body, want+1), resp.Body}, start, nil
	}
	return resp.Body, start, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// contentRangeStart parses "bytes START-END/TOTAL".
func contentRangeStart(h string) (int64, bool) {
	rest, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return 0, false
	}
	startStr, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(startStr, 10, 64)
	return n, err == nil && n >= 0
}

// remoteBackend adapts one endpoint of a remoteSource to resolve's backend.
type remoteBackend struct {
	s  *remoteSource
	ep *endpoint
}

func (b *remoteBackend) top(ctx context.Context, known KnownFunc) (ocispec.Descriptor, []byte, string, error) {
	ref := b.s.ref
	if ref.Digest != "" {
		// A known pinned digest costs no request at all.
		if body, ok := knownBytes(known, ocispec.Descriptor{Digest: ref.Digest}); ok {
			return ocispec.Descriptor{Digest: ref.Digest, Size: int64(len(body))}, body, "", nil
		}
		body, ct, err := b.getManifest(ctx, ref.Digest.String())
		if err != nil {
			return ocispec.Descriptor{}, nil, "", err
		}
		if err := verifyBytes("manifest does not match the pinned digest", body, ref.Digest, 0); err != nil {
			return ocispec.Descriptor{}, nil, "", err
		}
		return ocispec.Descriptor{Digest: ref.Digest, Size: int64(len(body))}, body, ct, nil
	}

	// A tag: HEAD first (HEADs do not count against Docker Hub's pull limit). If the
	// digest it reports is one the caller already holds, we are done.
	var headDigest digest.Digest
	hdr := http.Header{"Accept": {acceptManifests}}
	resp, err := b.s.do(ctx, b.ep, http.MethodHead, "manifests/"+ref.Tag, hdr, "manifest "+ref.String())
	switch {
	case err == nil:
		resp.Body.Close()
		if resp.ContentLength > MaxManifestSize {
			return ocispec.Descriptor{}, nil, "", fmt.Errorf("manifest is %d bytes (limit %d): %w", resp.ContentLength, MaxManifestSize, ErrManifestTooLarge)
		}
		if d := digest.Digest(resp.Header.Get("Docker-Content-Digest")); d.Validate() == nil && d.Algorithm() == digest.SHA256 {
			headDigest = d
			// knownBytes re-hashes: the header alone is never trusted.
			if body, ok := knownBytes(known, ocispec.Descriptor{Digest: d}); ok {
				return ocispec.Descriptor{Digest: d, Size: int64(len(body))}, body, resp.Header.Get("Content-Type"), nil
			}
		}
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrUnauthorized), errors.Is(err, ErrRateLimited),
		ctx.Err() != nil:
		return ocispec.Descriptor{}, nil, "", err
	default:
		// Some registries answer HEAD badly (405, 400): the GET decides.
		b.s.c.log.Debug("manifest HEAD failed, trying GET", "ref", ref.String(), "err", err.Error())
	}
	body, ct, err := b.getManifest(ctx, ref.Tag)
	if err != nil {
		return ocispec.Descriptor{}, nil, "", err
	}
	got := digest.FromBytes(body)
	if headDigest != "" && got != headDigest {
		return ocispec.Descriptor{}, nil, "", fmt.Errorf("the registry announced digest %s but served a manifest with digest %s: %w", headDigest, got, ErrDigestMismatch)
	}
	return ocispec.Descriptor{Digest: got, Size: int64(len(body))}, body, ct, nil
}

func (b *remoteBackend) manifest(ctx context.Context, desc ocispec.Descriptor) ([]byte, string, error) {
	return b.getManifest(ctx, desc.Digest.String())
}

func (b *remoteBackend) smallBlob(ctx context.Context, desc ocispec.Descriptor) ([]byte, error) {
	what := fmt.Sprintf("config %s of %s", desc.Digest, b.s.ref.Name())
	body, _, err := b.getSmall(ctx, "blobs/"+desc.Digest.String(), nil, what)
	return body, err
}

// getManifest GETs a manifest by tag or digest, refusing anything over MaxManifestSize.
func (b *remoteBackend) getManifest(ctx context.Context, ident string) ([]byte, string, error) {
	what := "manifest " + b.s.ref.Name() + refSep(ident) + ident
	return b.getSmall(ctx, "manifests/"+ident, http.Header{"Accept": {acceptManifests}}, what)
}

// getSmall GETs a small document whole. A body cut off mid-way (broken connection,
// stall) is fetched again, within the retry budget.
func (b *remoteBackend) getSmall(ctx context.Context, path string, hdr http.Header, what string) ([]byte, string, error) {
	policy := b.s.c.retry
	for attempt := 1; ; attempt++ {
		resp, err := b.s.do(ctx, b.ep, http.MethodGet, path, hdr, what)
		if err != nil {
			return nil, "", err
		}
		ct := resp.Header.Get("Content-Type")
		if mt, _, ok := strings.Cut(ct, ";"); ok {
			ct = mt
		}
		body, err := readBounded(resp, what)
		if err != nil && attempt < policy.Attempts && retryableError(ctx, err) {
			b.s.c.log.Warn("retrying", "what", what, "attempt", attempt, "err", err.Error())
			if err := sleep(ctx, policy.backoff(attempt)); err != nil {
				return nil, "", err
			}
			continue
		}
		return body, strings.TrimSpace(ct), err
	}
}

func refSep(ident string) string {
	if strings.Contains(ident, ":") {
		return "@"
	}
	return ":"
}

// readBounded reads a manifest or config body of at most MaxManifestSize and closes it.
func readBounded(resp *http.Response, what string) ([]byte, error) {
	defer resp.Body.Close()
	if resp.ContentLength > MaxManifestSize {
		return nil, fmt.Errorf("%s: %d bytes (limit %d): %w", what, resp.ContentLength, MaxManifestSize, ErrManifestTooLarge)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if len(body) > MaxManifestSize {
		return nil, fmt.Errorf("%s: more than %d bytes: %w", what, MaxManifestSize, ErrManifestTooLarge)
	}
	return body, nil
}

// do sends one registry request with retries: broken connections, timeouts, stalls,
// 408, 429 and 5xx are retried with jittered exponential backoff (429/503 honour
// Retry-After). On success the body is wrapped in a stall detector.
func (s *remoteSource) do(ctx context.Context, ep *endpoint, method, path string, hdr http.Header, what string) (*http.Response, error) {
	policy := s.c.retry
	if ep.mirror {
		// A failing mirror should hand over to the next endpoint quickly.
		policy.Attempts = min(policy.Attempts, 2)
	}
	u := url.URL{Scheme: ep.reg.Scheme(), Host: ep.reg.RegistryStr(), Path: "/v2/" + s.ref.Repository + "/" + path}
	for attempt := 1; ; attempt++ {
		last := attempt >= policy.Attempts
		cl, err := s.httpClient(ctx, ep)
		if err != nil {
			if !last && retryableSetup(ctx, err) {
				s.c.log.Warn("retrying", "what", what, "attempt", attempt, "err", err.Error())
				if err := sleep(ctx, policy.backoff(attempt)); err != nil {
					return nil, err
				}
				continue
			}
			return nil, err
		}
		rctx, wd := newWatchdog(ctx, s.c.stallTimeout)
		req, err := http.NewRequestWithContext(rctx, method, u.String(), nil)
		if err != nil {
			wd.stop()
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		resp, err := cl.Do(req)
		if err != nil {
			if cause := context.Cause(rctx); errors.Is(cause, ErrStalled) {
				err = fmt.Errorf("%s: no response: %w", ep.label, cause)
			}
			wd.stop()
			if !last && retryableError(ctx, err) {
				s.c.log.Warn("retrying", "what", what, "attempt", attempt, "err", err.Error())
				if err := sleep(ctx, policy.backoff(attempt)); err != nil {
					return nil, err
				}
				continue
			}
			return nil, fmt.Errorf("%s %s: %w", method, what, err)
		}
		wd.kick()
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			if rem := resp.Header.Get("RateLimit-Remaining"); rem != "" {
				// Docker Hub reports the pull quota on manifest requests; show it to -v users.
				s.c.log.Debug("registry rate limit", "registry", ep.label, "remaining", sanitize(rem), "limit", sanitize(resp.Header.Get("RateLimit-Limit")))
			}
			resp.Body = &stallReader{rc: resp.Body, ctx: rctx, w: wd}
			return resp, nil
		}
		if !last && retryableStatus(resp.StatusCode) {
			delay := policy.backoff(attempt)
			if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
				if d, ok := policy.retryAfter(resp.Header.Get("Retry-After"), timeNow()); ok {
					delay = d
				}
			}
			s.c.log.Warn("retrying", "what", what, "attempt", attempt, "status", resp.StatusCode, "delay", delay)
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			wd.stop()
			if err := sleep(ctx, delay); err != nil {
				return nil, err
			}
			continue
		}
		wd.stop()
		if resp.StatusCode == http.StatusTooManyRequests {
			resp.Body.Close()
			return nil, rateLimitFrom(resp, ep.label, s.ref.IsDockerHub(), attempt)
		}
		return nil, responseError(resp, what)
	}
}

// httpClient returns the endpoint's authenticated client, doing the ping and token
// handshake (go-containerregistry's transport) on first use.
func (s *remoteSource) httpClient(ctx context.Context, ep *endpoint) (*http.Client, error) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.client != nil {
		return ep.client, nil
	}
	auth, err := s.c.keychain.Resolve(ep.reg)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", ep.reg.RegistryStr(), err)
	}
	base := s.c.transport
	if s.c.insecure[ep.reg.RegistryStr()] {
		if ht, ok := base.(*http.Transport); ok {
			ht = ht.Clone()
			if ht.TLSClientConfig == nil {
				ht.TLSClientConfig = &tls.Config{}
			}
			ht.TLSClientConfig.InsecureSkipVerify = true //nolint:gosec // the user named this registry insecure
			base = ht
		}
	}
	scope := ep.reg.Repo(s.ref.Repository).Scope(transport.PullScope)
	// The ping and token exchange get the stall timeout as a deadline: a registry that
	// accepts the connection and never answers must not hang the pull.
	sctx, wd := newWatchdog(ctx, s.c.stallTimeout)
	rt, err := transport.NewWithContext(sctx, ep.reg, auth, base, []string{scope})
	wd.stop()
	if err != nil {
		if cause := context.Cause(sctx); errors.Is(cause, ErrStalled) && ctx.Err() == nil {
			return nil, fmt.Errorf("connect to %s: no answer: %w", ep.label, cause)
		}
		return nil, setupError(ep, err)
	}
	ep.client = &http.Client{Transport: rt, CheckRedirect: checkRedirect}
	return ep.client, nil
}

// setupError classifies a failure of the ping / token handshake.
func setupError(ep *endpoint, err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		switch {
		case te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden:
			return &statusError{Code: te.StatusCode, What: "authenticate to " + ep.label, sentinel: ErrUnauthorized, Detail: sanitize(te.Error())}
		case te.StatusCode == http.StatusNotFound:
			return &statusError{Code: te.StatusCode, What: "authenticate to " + ep.label, sentinel: ErrNotFound, Detail: sanitize(te.Error())}
		default:
			return &statusError{Code: te.StatusCode, What: "authenticate to " + ep.label, Detail: sanitize(te.Error())}
		}
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("authenticate to %s: the token endpoint returned something that is not a token: %v: %w", ep.label, err, ErrUnauthorized)
	}
	return fmt.Errorf("connect to %s: %w", ep.label, err)
}

// retryableSetup: the handshake is retried for the same transient causes as requests.
func retryableSetup(ctx context.Context, err error) bool {
	var se *statusError
	if errors.As(err, &se) {
		return retryableStatus(se.Code)
	}
	return retryableError(ctx, err)
}

// checkRedirect follows at most 10 redirects, never from https to plain http (except to
// loopback), and drops the Authorization header whenever the host:port changes, so that
// credentials never follow a redirect to another host (B9).
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return fmt.Errorf("stopped after %d redirects (redirect loop?)", len(via))
	}
	orig := via[0].URL
	if orig.Scheme == "https" && req.URL.Scheme != "https" && !isLoopbackHost(req.URL.Host) {
		return fmt.Errorf("refusing redirect from https to %s", redactURL(req.URL))
	}
	if !sameHostPort(orig, req.URL) {
		req.Header.Del("Authorization")
	}
	return nil
}

func sameHostPort(a, b *url.URL) bool {
	port := func(u *url.URL) string {
		if p := u.Port(); p != "" {
			return p
		}
		if u.Scheme == "http" {
			return "80"
		}
		return "443"
	}
	return strings.EqualFold(a.Hostname(), b.Hostname()) && port(a) == port(b)
}

func redactURL(u *url.URL) string {
	c := *u
	c.RawQuery, c.User = "", nil
	return c.String()
}
