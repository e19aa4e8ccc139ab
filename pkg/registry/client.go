package registry

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

// Client opens Sources. It holds the configuration shared by every pull: credentials,
// HTTP transport, insecure registries, Docker Hub mirrors, retry policy and timeouts.
// A Client is safe for concurrent use.
type Client struct {
	keychain     authn.Keychain
	transport    http.RoundTripper
	insecure     map[string]bool
	mirrors      []*url.URL
	log          *slog.Logger
	retry        RetryPolicy
	stallTimeout time.Duration
}

// Option configures a Client.
type Option func(*Client) error

// RetryPolicy says how often and how patiently failed requests are retried. Retried are
// connection errors before a response, i/o timeouts, 408, 429 and 5xx.
type RetryPolicy struct {
	// Attempts is the total number of tries (1 = no retry).
	Attempts int
	// MinBackoff is the first delay; each further delay doubles, up to MaxBackoff, with
	// ±50% jitter.
	MinBackoff, MaxBackoff time.Duration
	// MaxRetryAfter caps how long a 429/503 Retry-After header may make us wait.
	MaxRetryAfter time.Duration
}

// DefaultRetryPolicy: 5 tries, 500ms doubling to 10s, Retry-After honoured up to 60s.
var DefaultRetryPolicy = RetryPolicy{Attempts: 5, MinBackoff: 500 * time.Millisecond, MaxBackoff: 10 * time.Second, MaxRetryAfter: 60 * time.Second}

// DefaultStallTimeout is how long a blob read may get no bytes before it fails.
const DefaultStallTimeout = 30 * time.Second

// New returns a Client. Without options it uses ~/.docker/config.json (DOCKER_CONFIG,
// credential helpers) for credentials, http.DefaultTransport, and no mirrors.
func New(opts ...Option) (*Client, error) {
	c := &Client{
		keychain:     authn.DefaultKeychain,
		transport:    http.DefaultTransport,
		insecure:     map[string]bool{},
		log:          slog.New(slog.DiscardHandler),
		retry:        DefaultRetryPolicy,
		stallTimeout: DefaultStallTimeout,
	}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// WithKeychain sets where credentials come from (default authn.DefaultKeychain).
func WithKeychain(k authn.Keychain) Option {
	return func(c *Client) error {
		if k == nil {
			return fmt.Errorf("registry: nil keychain")
		}
		c.keychain = k
		return nil
	}
}

// WithTransport sets the base HTTP transport (default http.DefaultTransport).
func WithTransport(t http.RoundTripper) Option {
	return func(c *Client) error {
		if t == nil {
			return fmt.Errorf("registry: nil transport")
		}
		c.transport = t
		return nil
	}
}

// WithInsecure lets the named registry hosts ("host" or "host:port") be reached over
// plain HTTP or TLS without certificate verification. Loopback hosts need no flag.
func WithInsecure(hosts ...string) Option {
	return func(c *Client) error {
		for _, h := range hosts {
			h = strings.TrimSpace(h)
			if h == "" {
				continue
			}
			if h == "docker.io" {
				h = DockerHub
			}
			c.insecure[h] = true
		}
		return nil
	}
}

// WithMirrors sets pull-through mirrors for Docker Hub references, tried in order before
// Docker Hub itself (like docker's registry-mirrors). Each is a URL such as
// "https://mirror.example.com" or "http://127.0.0.1:5000"; a bare host means https
// (http for loopback hosts).
func WithMirrors(urls ...string) Option {
	return func(c *Client) error {
		for _, s := range urls {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			if !strings.Contains(s, "://") {
				scheme := "https"
				if isLoopbackHost(s) {
					scheme = "http"
				}
				s = scheme + "://" + s
			}
			u, err := url.Parse(s)
			if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
				return fmt.Errorf("invalid mirror %q: want http(s)://host[:port]: %w", s, ErrBadReference)
			}
			if u.Path != "" && u.Path != "/" {
				return fmt.Errorf("invalid mirror %q: a mirror URL has no path: %w", s, ErrBadReference)
			}
			c.mirrors = append(c.mirrors, &url.URL{Scheme: u.Scheme, Host: u.Host})
		}
		return nil
	}
}

// WithLogger sets where the client logs retries and mirror choices (default: discarded).
func WithLogger(l *slog.Logger) Option {
	return func(c *Client) error {
		if l != nil {
			c.log = l
		}
		return nil
	}
}

// WithRetry sets the retry policy (default DefaultRetryPolicy).
func WithRetry(p RetryPolicy) Option {
	return func(c *Client) error {
		if p.Attempts < 1 {
			p.Attempts = 1
		}
		if p.MaxBackoff < p.MinBackoff {
			p.MaxBackoff = p.MinBackoff
		}
		c.retry = p
		return nil
	}
}

// WithStallTimeout sets how long a blob stream may deliver no bytes before the read
// fails (default DefaultStallTimeout; 0 disables the check).
func WithStallTimeout(d time.Duration) Option {
	return func(c *Client) error {
		if d < 0 {
			return fmt.Errorf("registry: negative stall timeout")
		}
		c.stallTimeout = d
		return nil
	}
}

// Open returns the Source for ref: a registry (through the mirrors for Docker Hub
// references), an OCI image layout or a docker-archive tarball. Open does no I/O for
// registries; errors surface on first use.
func (c *Client) Open(ref Reference) (Source, error) {
	switch ref.Transport {
	case TransportRegistry:
		return c.openRemote(ref)
	case TransportOCI:
		return openOCILayout(ref)
	case TransportDockerArchive:
		return openDockerArchive(ref)
	}
	return nil, fmt.Errorf("open %s: unknown transport %q: %w", ref, ref.Transport, ErrBadReference)
}
