package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Client talks to a quorumkv cluster. It is safe for concurrent use; make
// one per cluster and share it. Close it when done.
type Client struct {
	cfg       config
	hc        *http.Client
	transport *http.Transport // the default transport, closed by Close; nil with WithHTTPClient
	scheme    string          // http or https
	endpoints []string        // host:port, as configured

	rr atomic.Uint64 // rotation of endpoints and replicas

	table   atomic.Pointer[table] // key-aware: the partition table, nil until loaded
	health  health
	trigger chan string // key-aware: asks the refresher to refresh now, from this address first

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
}

// New returns a client of the cluster reachable at endpoints: node
// addresses as host:port or http(s)://host:port. With key-aware routing (the
// default) it loads the partition table from one of them before it
// returns, trying each in turn within the attempt timeout; if none answers,
// New still succeeds, requests go round-robin over the endpoints, and the
// table is loaded in the background. New fails only on bad arguments.
func New(endpoints []string, opts ...Option) (*Client, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if len(endpoints) == 0 {
		return nil, errors.New("quorumkv: New needs at least one endpoint")
	}
	if cfg.routing != KeyAware && cfg.routing != RoundRobin {
		return nil, fmt.Errorf("quorumkv: unknown routing %d", cfg.routing)
	}
	if cfg.r < 0 || cfg.w < 0 {
		return nil, fmt.Errorf("quorumkv: default R %d and W %d must be positive (or 0: the server's)", cfg.r, cfg.w)
	}
	if cfg.httpClient != nil && cfg.tlsConfig != nil {
		return nil, errors.New("quorumkv: WithTLSConfig and WithHTTPClient exclude each other: configure TLS on the http.Client's transport")
	}
	c := &Client{cfg: cfg, trigger: make(chan string, 1)}
	schemes := map[string]bool{}
	for _, e := range endpoints {
		scheme, host, err := parseEndpoint(e)
		if err != nil {
			return nil, err
		}
		schemes[scheme] = true
		c.endpoints = append(c.endpoints, host)
	}
	switch {
	case len(schemes) > 1:
		return nil, errors.New("quorumkv: endpoints mix http and https")
	case schemes["https"] || cfg.tlsConfig != nil:
		c.scheme = "https"
	default:
		c.scheme = "http"
	}
	if cfg.httpClient != nil {
		c.hc = cfg.httpClient
	} else {
		c.transport = defaultTransport(cfg.tlsConfig)
		c.hc = &http.Client{Transport: c.transport}
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if cfg.routing == KeyAware {
		ctx, cancel := context.WithTimeout(c.ctx, cfg.attemptTimeout)
		if err := c.refresh(ctx, ""); err != nil {
			cfg.logger.Warn("quorumkv: no partition table yet; routing round-robin until one loads", "err", err)
		}
		cancel()
		c.wg.Add(1)
		go c.refresher()
	}
	return c, nil
}

// parseEndpoint accepts host:port or http(s)://host:port[/].
func parseEndpoint(e string) (scheme, host string, err error) {
	scheme = "http"
	if strings.Contains(e, "://") {
		u, err := url.Parse(e)
		if err != nil {
			return "", "", fmt.Errorf("quorumkv: endpoint %q: %w", e, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return "", "", fmt.Errorf("quorumkv: endpoint %q must be host:port or http(s)://host:port", e)
		}
		scheme, e = u.Scheme, u.Host
	}
	if _, _, err := net.SplitHostPort(e); err != nil {
		return "", "", fmt.Errorf("quorumkv: endpoint %q must be host:port or http(s)://host:port: %w", e, err)
	}
	return scheme, e, nil
}

// defaultTransport keeps connections alive, with enough idle connections
// per node that load does not open (and leave in TIME_WAIT) a connection
// per request.
func defaultTransport(tlsConfig *tls.Config) *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   3 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     tlsConfig != nil,
		TLSClientConfig:       tlsConfig,
		MaxIdleConns:          0, // no global cap
		MaxIdleConnsPerHost:   DefaultMaxIdleConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// Close stops the background refresher and closes the idle connections of
// the default transport. Calls in flight are not interrupted; later calls
// fail with ErrClosed. Close is idempotent.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.cancel()
	c.wg.Wait()
	if c.transport != nil {
		c.transport.CloseIdleConnections()
	}
	return nil
}

// RingVersion returns the ring_version of the partition table the client
// routes by, or "" when it has none (round-robin routing, or no node
// answered yet). It changes after the cluster's placement changes: when a
// response's X-Ring-Version differs, the client refreshes its table.
func (c *Client) RingVersion() string {
	if t := c.table.Load(); t != nil {
		return t.version
	}
	return ""
}

// Replicas returns the HTTP addresses (host:port) of the nodes that count
// toward R and W for bucket/key now, by the client's table: where key-aware
// routing sends its requests. Nil with round-robin routing or before the
// table is loaded.
func (c *Client) Replicas(bucket, key string) []string {
	t := c.table.Load()
	if t == nil {
		return nil
	}
	return t.replicaAddrs(bucket, key)
}

// Refresh loads the partition table now, from the endpoints or the nodes
// the client knows. Key-aware clients do it on their own (in the background
// and on ring version changes); Refresh is for callers that want the new
// placement at once. It returns nil without doing anything with round-robin
// routing.
func (c *Client) Refresh(ctx context.Context) error {
	if c.cfg.routing != KeyAware {
		return nil
	}
	if c.closed.Load() {
		return ErrClosed
	}
	return c.refresh(ctx, "")
}

func (c *Client) log() *slog.Logger { return c.cfg.logger }
