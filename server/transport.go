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
	// ApplyContext is Apply that also returns the context of node's
	// object after the merge, if node keeps k (ok is false if it kept o as
	// hints, or is of a release that does not answer with one).
	ApplyContext(ctx context.Context, node string, k storage.Key, o *storage.Object) (c storage.Context, ok bool, err error)
	// ApplyMany merges a batch of objects into node's copies, in one synced
	// commit (hint delivery).
	ApplyMany(ctx context.Context, node string, entries []storage.PartitionEntry) error
	// Holds asks node whether it holds partition p completely and keeps it
	// (it is a target primary of p in its own view), by its own current
	// record: gossiped holdings may be stale.
	Holds(ctx context.Context, node string, p uint32) (bool, error)
	// Hint asks node, a fallback, to keep o durably as a hint for owner.
	// It fails with ErrHintsFull when node's hint store is full.
	Hint(ctx context.Context, node, owner string, k storage.Key, o *storage.Object) error
	// Stream reads a batch of partition p from node, after the cursor.
	Stream(ctx context.Context, node string, p uint32, after []byte, maxBytes int) (batch StreamBatch, err error)
	// AntiEntropy sends an anti-entropy protocol request (see package
	// antientropy) to node and returns the response body.
	AntiEntropy(ctx context.Context, node, op string, body []byte) ([]byte, error)
}

// StreamBatch is one batch of a partition transfer.
type StreamBatch struct {
	Entries []storage.PartitionEntry
	Next    []byte // cursor for the next batch
	Done    bool   // the partition is exhausted
}

// Internal API paths and headers.
const (
	internalGet    = "/internal/v1/get"
	internalApply  = "/internal/v1/apply"
	internalApplyC = "/internal/v1/apply-context" // apply, answering with the merged context
	internalHint   = "/internal/v1/hint"
	internalBatch  = "/internal/v1/apply-batch"
	internalHolds  = "/internal/v1/holds"
	internalStream = "/internal/v1/stream"
	internalAAE    = "/internal/v1/aae/" // + operation
	internalMux    = "/internal/v1/mux"  // upgrades to a multiplexed connection
	// clusterHeader carries the sender's cluster parameters; a node
	// configured differently refuses the call.
	clusterHeader = "X-Quorumkv-Cluster"
	objectType    = "application/x-quorumkv-object"
	// maxInternalBody bounds what the internal API reads: an object holds
	// at most SiblingLimit client-sized values plus whatever repairs merged,
	// so this is generous, not tight.
	maxInternalBody = 256 << 20
)

// HTTPTransport is the Transport between real nodes. Replica reads, applies,
// hints and holds questions travel over one multiplexed connection per peer
// (mux.go); bulk calls (stream, apply-batch, anti-entropy) are plain POSTs
// over HTTP/1.1 keep-alive connections.
type HTTPTransport struct {
	client  *http.Client
	mux     *muxPool
	addrs   func(node string) (string, bool)
	cluster string
}

// NewHTTPTransport returns a transport that resolves node ids with addrs,
// sends cluster (the clusterHeader value) with every call and opens
// connections with dial.
func NewHTTPTransport(addrs func(node string) (string, bool), cluster string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *HTTPTransport {
	return &HTTPTransport{
		client:  &http.Client{Transport: newHTTPClientTransport(dial)},
		mux:     newMuxPool(dial, cluster),
		addrs:   addrs,
		cluster: cluster,
	}
}

// newHTTPClientTransport is the connection pool for node-to-node and
// forwarded calls. Go's default keeps 2 idle connections per host, which
// under load means a new TCP connection per call and port exhaustion.
func newHTTPClientTransport(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Transport {
	return &http.Transport{
		DialContext:         dial,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false,
	}
}

// Close releases pooled connections and closes the multiplexed ones,
// failing the calls still waiting on them; later calls over multiplexed
// connections fail too. The node closes its transport when it stops.
func (t *HTTPTransport) Close() {
	t.client.CloseIdleConnections()
	t.mux.close()
}

// call sends an internal request to node and returns the answer's status
// and body: over node's multiplexed connection for the operations it
// carries, as a POST otherwise. Only a failure to get an answer at all is
// an error.
func (t *HTTPTransport) call(ctx context.Context, node, path string, body []byte) (int, []byte, error) {
	addr, ok := t.addrs(node)
	if !ok {
		return 0, nil, fmt.Errorf("%w: unknown node %q", ErrUnavailable, node)
	}
	if _, ok := ctx.Deadline(); !ok {
		return 0, nil, fmt.Errorf("replica call to %s without a deadline", node)
	}
	if op, ok := muxOps[path]; ok {
		status, resp, err := t.mux.call(ctx, addr, op, body)
		switch {
		case errors.Is(err, errMuxUnsupported): // an older node: POST it
		case err != nil:
			return 0, nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, node, err)
		default:
			return status, resp, nil
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", objectType)
	req.Header.Set(clusterHeader, t.cluster)
	resp, err := t.client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, node, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, maxInternalBody))
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, node, err)
	}
	return resp.StatusCode, out, nil
}

// unexpected is the error for an answer a transport method does not expect.
func unexpected(node string, status int, body []byte) error {
	if len(body) > 4096 {
		body = body[:4096]
	}
	return fmt.Errorf("%w: %s answered %d: %s", ErrUnavailable, node, status, bytes.TrimSpace(body))
}

// Get implements Transport.
func (t *HTTPTransport) Get(ctx context.Context, node string, k storage.Key) (*storage.Object, error) {
	status, body, err := t.call(ctx, node, internalGet, appendKey(nil, k))
	switch {
	case err != nil:
		return nil, err
	case status == http.StatusOK:
		return storage.DecodeObjectFrom(body) // call's answer is ours
	case status == http.StatusNotFound:
		return nil, storage.ErrNotFound
	}
	return nil, unexpected(node, status, body)
}

// Apply implements Transport.
func (t *HTTPTransport) Apply(ctx context.Context, node string, k storage.Key, o *storage.Object) error {
	return t.expectNoContent(ctx, node, internalApply, storage.AppendObject(appendKey(nil, k), o))
}

// ApplyContext implements Transport.
func (t *HTTPTransport) ApplyContext(ctx context.Context, node string, k storage.Key, o *storage.Object) (storage.Context, bool, error) {
	body := storage.AppendObject(appendKey(nil, k), o)
	status, resp, err := t.call(ctx, node, internalApplyC, body)
	switch {
	case err != nil:
		return storage.Context{}, false, err
	case status == http.StatusOK:
		c, err := storage.DecodeContext(string(resp))
		if err != nil {
			return storage.Context{}, false, fmt.Errorf("%w: %s answered a bad context: %v", ErrUnavailable, node, err)
		}
		return c, true, nil
	case status == http.StatusNoContent:
		return storage.Context{}, false, nil
	case status == http.StatusNotFound || (status == http.StatusBadRequest && bytes.Contains(resp, []byte("unknown operation"))):
		// A node of an older release: a plain apply, without the context.
		return storage.Context{}, false, t.expectNoContent(ctx, node, internalApply, body)
	}
	return storage.Context{}, false, unexpected(node, status, resp)
}

// ApplyMany implements Transport. The body is a stream batch.
func (t *HTTPTransport) ApplyMany(ctx context.Context, node string, entries []storage.PartitionEntry) error {
	return t.expectNoContent(ctx, node, internalBatch, appendStreamBatch(nil, StreamBatch{Entries: entries, Done: true}))
}

func (t *HTTPTransport) expectNoContent(ctx context.Context, node, path string, body []byte) error {
	status, resp, err := t.call(ctx, node, path, body)
	if err == nil && status != http.StatusNoContent {
		err = unexpected(node, status, resp)
	}
	return err
}

// Holds implements Transport.
func (t *HTTPTransport) Holds(ctx context.Context, node string, p uint32) (bool, error) {
	status, body, err := t.call(ctx, node, internalHolds, binary.AppendUvarint(nil, uint64(p)))
	if err != nil {
		return false, err
	}
	if status != http.StatusOK {
		return false, unexpected(node, status, body)
	}
	return string(body) == "1", nil
}

// AntiEntropy implements Transport.
func (t *HTTPTransport) AntiEntropy(ctx context.Context, node, op string, body []byte) ([]byte, error) {
	status, out, err := t.call(ctx, node, internalAAE+op, body)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, unexpected(node, status, out)
	}
	return out, nil
}

// Hint implements Transport.
func (t *HTTPTransport) Hint(ctx context.Context, node, owner string, k storage.Key, o *storage.Object) error {
	body := binary.AppendUvarint(nil, uint64(len(owner)))
	body = append(body, owner...)
	status, msg, err := t.call(ctx, node, internalHint, storage.AppendObject(appendKey(body, k), o))
	switch {
	case err != nil:
		return err
	case status == http.StatusNoContent:
		return nil
	case status == http.StatusInsufficientStorage:
		return fmt.Errorf("%w: %s", storage.ErrHintsFull, node)
	}
	return unexpected(node, status, msg)
}

// Stream implements Transport.
func (t *HTTPTransport) Stream(ctx context.Context, node string, p uint32, after []byte, maxBytes int) (StreamBatch, error) {
	req := binary.AppendUvarint(nil, uint64(p))
	req = binary.AppendUvarint(req, uint64(maxBytes))
	req = append(req, after...)
	status, body, err := t.call(ctx, node, internalStream, req)
	if err != nil {
		return StreamBatch{}, err
	}
	if status != http.StatusOK {
		return StreamBatch{}, unexpected(node, status, body)
	}
	return decodeStreamBatch(body)
}

// Stream batch encoding: done byte, cursor (length-prefixed), then entries
// as length-prefixed key (appendKey) and length-prefixed object.
func appendStreamBatch(buf []byte, b StreamBatch) []byte {
	done := byte(0)
	if b.Done {
		done = 1
	}
	buf = append(buf, done)
	buf = binary.AppendUvarint(buf, uint64(len(b.Next)))
	buf = append(buf, b.Next...)
	for _, e := range b.Entries {
		k := appendKey(nil, e.Key)
		buf = binary.AppendUvarint(buf, uint64(len(k)))
		buf = append(buf, k...)
		o := storage.EncodeObject(e.Object)
		buf = binary.AppendUvarint(buf, uint64(len(o)))
		buf = append(buf, o...)
	}
	return buf
}

func decodeStreamBatch(b []byte) (StreamBatch, error) {
	var out StreamBatch
	if len(b) == 0 || b[0] > 1 {
		return out, errBadBatch
	}
	out.Done = b[0] == 1
	b = b[1:]
	field := func() ([]byte, bool) {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return nil, false
		}
		f := b[n : n+int(l)]
		b = b[n+int(l):]
		return f, true
	}
	next, ok := field()
	if !ok {
		return out, errBadBatch
	}
	out.Next = bytes.Clone(next)
	for len(b) > 0 {
		kb, ok1 := field()
		ob, ok2 := field()
		if !ok1 || !ok2 {
			return out, errBadBatch
		}
		k, rest, err := decodeKey(kb)
		if err != nil || len(rest) != 0 {
			return out, errBadBatch
		}
		o, err := storage.DecodeObject(ob)
		if err != nil {
			return out, err
		}
		out.Entries = append(out.Entries, storage.PartitionEntry{Key: k, Object: o})
	}
	return out, nil
}

var errBadBatch = errors.New("malformed stream batch")

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
