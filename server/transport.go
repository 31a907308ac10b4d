package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/quorumkv/quorumkv/storage"
)

// Transport carries replica calls from a coordinator to other nodes. The
// coordinator never calls it for itself. Implementations must honour the
// context's deadline. Tests wrap it to drop, delay or partition calls.
type Transport interface {
	// Get returns node's object for k, or storage.ErrNotFound.
	Get(ctx context.Context, node string, k storage.Key) (*storage.Object, error)
	// Apply merges o into node's object for k and returns once it is synced.
	Apply(ctx context.Context, node string, k storage.Key, o *storage.Object) error
}

// Internal API paths and headers.
const (
	internalGet   = "/internal/v1/get"
	internalApply = "/internal/v1/apply"
	// clusterHeader carries the sender's cluster parameters; a node
	// configured differently refuses the call.
	clusterHeader = "X-Quorumkv-Cluster"
	objectType    = "application/x-quorumkv-object"
	// maxInternalBody bounds what the internal API reads: an object holds
	// at most SiblingLimit client-sized values plus whatever repairs merged,
	// so this is generous, not tight.
	maxInternalBody = 256 << 20
)

// HTTPTransport is the Transport between real nodes: the internal API over
// HTTP/1.1 keep-alive connections.
type HTTPTransport struct {
	client  *http.Client
	addrs   func(node string) (string, bool)
	cluster string
}

// NewHTTPTransport returns a transport that resolves node ids with addrs and
// sends cluster (the clusterHeader value) with every call.
func NewHTTPTransport(addrs func(node string) (string, bool), cluster string) *HTTPTransport {
	return &HTTPTransport{client: &http.Client{Transport: newHTTPClientTransport()}, addrs: addrs, cluster: cluster}
}

// newHTTPClientTransport is the connection pool for node-to-node and
// forwarded calls. Go's default keeps 2 idle connections per host, which
// under load means a new TCP connection per call and port exhaustion.
func newHTTPClientTransport() *http.Transport {
	return &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false,
	}
}

// CloseIdleConnections releases pooled connections.
func (t *HTTPTransport) CloseIdleConnections() { t.client.CloseIdleConnections() }

func (t *HTTPTransport) call(ctx context.Context, node, path string, body []byte) (*http.Response, error) {
	addr, ok := t.addrs(node)
	if !ok {
		return nil, fmt.Errorf("%w: unknown node %q", ErrUnavailable, node)
	}
	if _, ok := ctx.Deadline(); !ok {
		return nil, fmt.Errorf("replica call to %s without a deadline", node)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", objectType)
	req.Header.Set(clusterHeader, t.cluster)
	resp, err := t.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, node, err)
	}
	return resp, nil
}

// Get implements Transport.
func (t *HTTPTransport) Get(ctx context.Context, node string, k storage.Key) (*storage.Object, error) {
	resp, err := t.call(ctx, node, internalGet, appendKey(nil, k))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxInternalBody))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, node, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return storage.DecodeObject(body)
	case http.StatusNotFound:
		return nil, storage.ErrNotFound
	default:
		return nil, fmt.Errorf("%w: %s answered %d: %s", ErrUnavailable, node, resp.StatusCode, bytes.TrimSpace(body))
	}
}

// Apply implements Transport.
func (t *HTTPTransport) Apply(ctx context.Context, node string, k storage.Key, o *storage.Object) error {
	resp, err := t.call(ctx, node, internalApply, storage.AppendObject(appendKey(nil, k), o))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("%w: %s answered %d: %s", ErrUnavailable, node, resp.StatusCode, bytes.TrimSpace(body))
	}
	return nil
}

// appendKey encodes a key for the internal API: partition, then bucket and
// key, each length-prefixed (uvarints).
func appendKey(buf []byte, k storage.Key) []byte {
	buf = binary.AppendUvarint(buf, uint64(k.Partition))
	buf = binary.AppendUvarint(buf, uint64(len(k.Bucket)))
	buf = append(buf, k.Bucket...)
	buf = binary.AppendUvarint(buf, uint64(len(k.Key)))
	return append(buf, k.Key...)
}

var errBadKey = errors.New("malformed key")

// decodeKey is the inverse of appendKey; it returns the bytes that follow.
func decodeKey(b []byte) (storage.Key, []byte, error) {
	var k storage.Key
	p, n := binary.Uvarint(b)
	if n <= 0 || p > 1<<32-1 {
		return k, nil, errBadKey
	}
	k.Partition = uint32(p)
	b = b[n:]
	var fields [2]string
	for i := range fields {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return k, nil, errBadKey
		}
		fields[i] = string(b[n : n+int(l)])
		b = b[n+int(l):]
	}
	k.Bucket, k.Key = fields[0], fields[1]
	return k, b, nil
}
