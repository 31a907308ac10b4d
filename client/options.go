package client

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"time"
)

// Routing chooses which node each request is sent to.
type Routing int

const (
	// KeyAware sends each request to a replica of its key, known from the
	// cluster's partition table (GET /v1/cluster): the replica coordinates
	// it without forwarding (the Dynamo paper's client-driven coordination).
	// On failure the next replica is tried, then any other known node. The
	// default.
	KeyAware Routing = iota
	// RoundRobin rotates over the configured endpoints; the node that
	// receives a request coordinates it (a write is forwarded to a replica).
	RoundRobin
)

// String returns "key-aware" or "round-robin".
func (r Routing) String() string {
	switch r {
	case KeyAware:
		return "key-aware"
	case RoundRobin:
		return "round-robin"
	}
	return "unknown"
}

// Defaults of the options.
const (
	// DefaultAttempts is how many times an operation is tried in all.
	DefaultAttempts = 3
	// DefaultBackoffBase is the first retry's backoff cap.
	DefaultBackoffBase = 50 * time.Millisecond
	// DefaultBackoffMax caps every retry's backoff.
	DefaultBackoffMax = time.Second
	// DefaultAttemptTimeout bounds one attempt (one HTTP request).
	DefaultAttemptTimeout = 5 * time.Second
	// DefaultRefreshInterval is how often the key-aware table is refreshed
	// when nothing hints that it changed.
	DefaultRefreshInterval = 30 * time.Second
	// DefaultMaxIdleConnsPerHost is the keep-alive pool size per node of
	// the default transport (Go's default, 2, exhausts ports under load).
	DefaultMaxIdleConnsPerHost = 256
)

// config is what the options set.
type config struct {
	httpClient      *http.Client
	tlsConfig       *tls.Config
	token           string
	r, w            int
	attempts        int
	backoffBase     time.Duration
	backoffMax      time.Duration
	attemptTimeout  time.Duration
	logger          *slog.Logger
	routing         Routing
	refreshInterval time.Duration
}

func defaultConfig() config {
	return config{
		attempts:        DefaultAttempts,
		backoffBase:     DefaultBackoffBase,
		backoffMax:      DefaultBackoffMax,
		attemptTimeout:  DefaultAttemptTimeout,
		logger:          slog.New(slog.DiscardHandler),
		routing:         KeyAware,
		refreshInterval: DefaultRefreshInterval,
	}
}

// An Option configures a Client in New.
type Option func(*config)

// WithHTTPClient sends requests with hc instead of the default client (an
// http.Transport with keep-alives and DefaultMaxIdleConnsPerHost idle
// connections per node). Per-attempt deadlines come from contexts, so
// hc.Timeout may stay zero. Close does not close hc's connections. Not
// combinable with WithTLSConfig: configure TLS on hc's transport.
func WithHTTPClient(hc *http.Client) Option { return func(c *config) { c.httpClient = hc } }

// WithTLSConfig makes the default transport speak HTTPS with cfg; endpoints
// and the node addresses learned from the cluster are then reached with
// https. Default: plain HTTP, unless an endpoint is an https:// URL.
func WithTLSConfig(cfg *tls.Config) Option { return func(c *config) { c.tlsConfig = cfg } }

// WithBearerToken sends "Authorization: Bearer token" with every request.
// Default: no Authorization header.
func WithBearerToken(token string) Option { return func(c *config) { c.token = token } }

// WithDefaultR sets the read quorum (1..N) of every Get (and of the read
// that a Put or Delete without WithContext makes), unless the call says R.
// Default 0: not sent, the node's default applies (--r, 2).
func WithDefaultR(r int) Option { return func(c *config) { c.r = r } }

// WithDefaultW sets the write quorum (1..N) of every Put and Delete, unless
// the call says W. Default 0: not sent, the node's default applies (--w, 2).
func WithDefaultW(w int) Option { return func(c *config) { c.w = w } }

// WithRetries sets how many attempts an operation makes in all (1: no
// retry) and the backoff between them: before retry k (k = 1, 2, ...) the
// client sleeps a random duration in [0, min(max, base·2^(k-1))) ("full
// jitter"). Retries stop early when the context is done, and an attempt is
// not started when the backoff would end past the context's deadline.
// Default DefaultAttempts (3), DefaultBackoffBase (50ms), DefaultBackoffMax
// (1s). Values below 1 (attempts) or 0 (durations) keep the defaults.
func WithRetries(attempts int, base, max time.Duration) Option {
	return func(c *config) {
		if attempts >= 1 {
			c.attempts = attempts
		}
		if base >= 0 {
			c.backoffBase = base
		}
		if max >= 0 {
			c.backoffMax = max
		}
	}
}

// WithAttemptTimeout bounds each attempt (one HTTP request and its answer);
// an attempt that takes longer is abandoned and retried on another node.
// A call's Timeout, if longer, raises it for that call. Default
// DefaultAttemptTimeout (5s), above the server's default request timeout
// (3s) so that the server's own 503 arrives first.
func WithAttemptTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.attemptTimeout = d
		}
	}
}

// WithLogger receives the client's logs (retries at debug, table refreshes
// and their failures). Default: discarded.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.logger = l
		}
	}
}

// WithRouting chooses the routing policy. Default KeyAware.
func WithRouting(r Routing) Option { return func(c *config) { c.routing = r } }

// WithRefreshInterval sets how often the key-aware client refreshes its
// partition table in the background. It also refreshes at once when a
// response's X-Ring-Version differs from its table's. Default
// DefaultRefreshInterval (30s).
func WithRefreshInterval(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.refreshInterval = d
		}
	}
}

// callConfig is what the call options set.
type callConfig struct {
	r, w        int
	strict      bool
	timeout     time.Duration
	context     string
	hasContext  bool
	contentType string
	returnBody  bool
	requestID   string
}

// A CallOption adjusts one operation.
type CallOption func(*callConfig)

// R sets this call's read quorum, 1..N (the node refuses more than N with a
// 400). It applies to Get and to the read a Put or Delete without
// WithContext makes first.
func R(n int) CallOption { return func(c *callConfig) { c.r = n } }

// W sets this call's write quorum, 1..N.
func W(n int) CallOption { return func(c *callConfig) { c.w = n } }

// Sloppy chooses between a sloppy quorum (true, the server's default: live
// fallback nodes stand in for down replicas and count toward R and W) and a
// strict one (false: only the key's replicas count; sent as sloppy=false).
// R + W > N promises that a read sees an acknowledged write only when both
// were strict and the ring was settled.
func Sloppy(sloppy bool) CallOption { return func(c *callConfig) { c.strict = !sloppy } }

// Timeout bounds the whole call, retries included, to d, and asks the
// server to answer within what is left of d (?timeout=, less a margin so
// that its 503 arrives before the call gives up). d at most the server's
// maximum (60s by default). An attempt may then take up to d, even if
// WithAttemptTimeout is shorter.
func Timeout(d time.Duration) CallOption { return func(c *callConfig) { c.timeout = d } }

// WithContext makes a Put or Delete supersede exactly the versions that the
// causal context token covers (Result.Context of an earlier read, or of a
// 404). Without it, a write supersedes what a read at R sees when it
// arrives. Ignored by Get.
func WithContext(token string) CallOption {
	return func(c *callConfig) { c.context, c.hasContext = token, true }
}

// ContentType sets the Content-Type a Put stores with its value. Default:
// application/octet-stream for Put, application/json for PutJSON, and for
// Update the first sibling's content type (application/octet-stream if
// none).
func ContentType(ct string) CallOption { return func(c *callConfig) { c.contentType = ct } }

// ReturnBody makes a Put or Delete answer with every live sibling of the key
// after the write (Result.Siblings), and a Result.Context covering them all.
func ReturnBody() CallOption { return func(c *callConfig) { c.returnBody = true } }

// RequestID sets the X-Request-Id of a Put or Delete: 1 to 64 bytes from
// [A-Za-z0-9._:-]. The server collapses versions written with the same
// request id, so repeating a write with the same id (after a crash of the
// caller, say) never adds a sibling. Never reuse an id for a different
// write: versions with one id are shown as one. Default: a random id per
// call, reused by its retries.
func RequestID(id string) CallOption { return func(c *callConfig) { c.requestID = id } }
