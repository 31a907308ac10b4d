package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quorumkv/quorumkv/storage"
)

// MaxKeyLen is the longest key accepted, in bytes after decoding.
const MaxKeyLen = 1024

const kvPrefix = "/v1/kv/"

// parseKVPath splits a /v1/kv/{bucket}/{key} path. The rule: the bucket is
// the first segment after /v1/kv/ and must match [A-Za-z0-9._-]{1,64}; the
// key is everything after the next slash, percent-decoded exactly once. So
// "a/b" and "a%2Fb" are both the key a/b, "%252F" is the key %2F, and any
// byte can be sent as %XX. It reads the escaped path, because net/http
// has already decoded r.URL.Path and chi may route on either.
func parseKVPath(escaped string) (bucket, key string, err error) {
	rest, ok := strings.CutPrefix(escaped, kvPrefix)
	if !ok {
		return "", "", badRequest("path must be %s{bucket}/{key}", kvPrefix)
	}
	bucket, rawKey, ok := strings.Cut(rest, "/")
	if !ok || rawKey == "" {
		return "", "", badRequest("missing key: path must be %s{bucket}/{key}", kvPrefix)
	}
	if err := validateBucket(bucket); err != nil {
		return "", "", err
	}
	key, err = url.PathUnescape(rawKey)
	if err != nil {
		return "", "", badRequest("key is not validly percent-encoded: %v", err)
	}
	if len(key) > MaxKeyLen {
		return "", "", badRequest("key is %d bytes, the limit is %d", len(key), MaxKeyLen)
	}
	return bucket, key, nil
}

func validateBucket(b string) error {
	if len(b) < 1 || len(b) > 64 {
		return badRequest("bucket must be 1 to 64 characters from [A-Za-z0-9._-]")
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return badRequest("bucket %q: character %q not in [A-Za-z0-9._-]", b, c)
		}
	}
	return nil
}

// kvRequest is a parsed client request on a key.
type kvRequest struct {
	key        storage.Key
	r, w       int
	deadline   time.Time
	context    storage.Context
	hasContext bool
	returnBody bool
	sloppy     bool
	requestID  string // X-Request-Id: the client's id of a write, kept with it
}

func (n *Node) parseKV(r *http.Request) (kvRequest, error) {
	bucket, key, err := parseKVPath(r.URL.EscapedPath())
	if err != nil {
		return kvRequest{}, err
	}
	req := kvRequest{key: n.keyFor(bucket, key), r: n.cfg.R, w: n.cfg.W, sloppy: true}
	q := r.URL.Query()
	if req.r, err = parseQuorum(q, "r", n.cfg.R, n.cfg.Ring.N); err != nil {
		return kvRequest{}, err
	}
	if req.w, err = parseQuorum(q, "w", n.cfg.W, n.cfg.Ring.N); err != nil {
		return kvRequest{}, err
	}
	timeout := n.cfg.Timeout
	if s := q.Get("timeout"); s != "" {
		if timeout, err = time.ParseDuration(s); err != nil || timeout <= 0 || timeout > n.cfg.MaxTimeout {
			return kvRequest{}, badRequest("timeout=%q must be a Go duration in (0, %v]", s, n.cfg.MaxTimeout)
		}
	}
	req.deadline = time.Now().Add(timeout)
	if s := q.Get("returnbody"); s != "" {
		if req.returnBody, err = strconv.ParseBool(s); err != nil {
			return kvRequest{}, badRequest("returnbody=%q must be true or false", s)
		}
	}
	if s := q.Get("sloppy"); s != "" {
		if req.sloppy, err = strconv.ParseBool(s); err != nil {
			return kvRequest{}, badRequest("sloppy=%q must be true or false", s)
		}
	}
	if tok := r.Header.Get("X-Context"); tok != "" {
		if req.context, err = storage.DecodeContext(tok); err != nil {
			return kvRequest{}, badRequest("X-Context: %v", err)
		}
		req.hasContext = true
	}
	if req.requestID = r.Header.Get("X-Request-Id"); req.requestID != "" && !validRequestID(req.requestID) {
		return kvRequest{}, badRequest("X-Request-Id must be 1 to %d bytes of letters, digits and ._:-", storage.MaxRequestID)
	}
	if r.Header.Get(forwardedHeader) == "" { // count client requests once
		var byReplica *[2]prometheus.Counter
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			byReplica = &n.metrics.coord.get
		case http.MethodPut:
			byReplica = &n.metrics.coord.put
		case http.MethodDelete:
			byReplica = &n.metrics.coord.delete
		}
		if byReplica != nil {
			replica := 0
			if n.placement().IsCounting(int(req.key.Partition), n.cfg.NodeID) {
				replica = 1
			}
			byReplica[replica].Inc()
		}
	}
	return req, nil
}

// validRequestID reports whether id may name a write: short, and plain
// enough to log and to pass through any proxy.
func validRequestID(id string) bool {
	if len(id) == 0 || len(id) > storage.MaxRequestID {
		return false
	}
	for _, c := range []byte(id) {
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._:-", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

// parseQuorum reads r or w: 1..n, one, quorum or all.
func parseQuorum(q url.Values, name string, def, n int) (int, error) {
	s := q.Get(name)
	switch s {
	case "":
		return def, nil
	case "one":
		return 1, nil
	case "quorum":
		return n/2 + 1, nil
	case "all":
		return n, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 || v > n {
		return 0, badRequest("%s=%q must be 1..%d, one, quorum or all", name, s, n)
	}
	return v, nil
}

// readBody reads a PUT body and checks it against its Content-Type.
func (n *Node) readBody(w http.ResponseWriter, r *http.Request) (value []byte, contentType string, err error) {
	value, err = readAll(http.MaxBytesReader(w, r.Body, n.cfg.MaxBody), r.ContentLength, n.cfg.MaxBody)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, "", fmt.Errorf("%w: body exceeds %d bytes", ErrTooLarge, n.cfg.MaxBody)
		}
		return nil, "", badRequest("reading body: %v", err)
	}
	contentType = r.Header.Get("Content-Type")
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	if len(contentType) > 255 {
		return nil, "", badRequest("Content-Type is longer than 255 bytes")
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, "", badRequest("Content-Type %q: %v", contentType, err)
	}
	if isJSON(mt) && !json.Valid(value) {
		return nil, "", badRequest("body is not valid JSON (Content-Type %s)", mt)
	}
	return value, contentType, nil
}

// readAll is io.ReadAll into a buffer sized for the declared length (one
// byte more, to see the end), when there is one within max.
func readAll(r io.Reader, length, max int64) ([]byte, error) {
	if length < 0 || length > max {
		return io.ReadAll(r)
	}
	b := make([]byte, 0, length+1)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // longer than declared: let append grow it
		}
	}
}

func isJSON(mediaType string) bool {
	return mediaType == "application/json" || strings.HasSuffix(mediaType, "+json")
}
