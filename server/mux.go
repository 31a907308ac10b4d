package server

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Multiplexed replica connections.
//
// A client request costs its coordinator one replica call per other
// replica. Sent as separate HTTP/1.1 requests, each call occupies a
// connection for its round trip and pays for request and header parsing
// and for a system call on each side. Instead, a node keeps one
// connection per peer on which calls are frames tagged with an id: any
// number are in flight at once, the peer answers each as soon as it is
// done (in any order), and a writer goroutine per connection sends every
// frame that queued while it was busy in one write. Under load many calls
// then share a system call and a TCP segment, and the applies that arrive
// together reach Pebble together, where their synced commits are grouped.
//
// The connection starts as an HTTP/1.1 request on the node's one port,
// POST /internal/v1/mux with "Upgrade: quorumkv-mux/1" and the cluster
// header; the node answers 101 Switching Protocols, and both sides then
// speak frames, integers big-endian, the length counting what follows it:
//
//	request:  length u32 | id u64 | op u8      | body (as the POST's body)
//	response: length u32 | id u64 | status u16 | body (as the POST's answer)
//
// Only the small, frequent calls of the request path travel this way
// (muxOps); bulk transfers stay plain POSTs so that a large batch never
// queues in front of them. A malformed frame closes the connection (a
// stream of frames cannot resynchronise); the caller's pending calls fail
// and the next call dials again.

const (
	muxProtocol = "quorumkv-mux/1"
	// Header sizes after the length: id and op; id and status.
	muxRequestHeader  = 8 + 1
	muxResponseHeader = 8 + 2
	// muxMaxQueued bounds the bytes waiting for one connection's writer:
	// past it, calls fail at once instead of piling up behind a peer that
	// stopped reading.
	muxMaxQueued = 64 << 20
	// muxWriteTimeout bounds one write to a peer. A peer that accepts no
	// bytes for that long is cut off, and the calls waiting on it fail.
	muxWriteTimeout = 10 * time.Second
	// muxMaxInflight bounds the calls one connection has in progress at
	// the node serving it; the rest wait in the socket (backpressure).
	muxMaxInflight = 1024
	// muxReadBuffer is the read buffer of either end.
	muxReadBuffer = 64 << 10
	// muxRetryUnsupported is how long a peer that refused the upgrade as
	// unknown gets its calls as POSTs before the upgrade is tried again
	// (after a rolling upgrade it will serve it).
	muxRetryUnsupported = time.Minute
	// muxSilentLimit is how long a connection may stay silent while calls
	// on it time out before it is taken for dead (see muxConn.call).
	muxSilentLimit = 5 * time.Second
)

// muxOps numbers the internal operations that multiplexed connections
// carry. The numbers are the wire protocol: never reuse one.
var muxOps = map[string]byte{
	internalGet:   1,
	internalApply: 2,
	internalHint:  3,
	internalHolds: 4,
	// 5 since the release that answers a plain write's applies with the
	// replica's context.
	internalApplyC: 5,
}

var (
	errMuxClosed = errors.New("multiplexed connection closed")
	// errMuxUnsupported: the peer does not serve multiplexed connections
	// (it runs a release from before them); calls go as POSTs instead.
	errMuxUnsupported = errors.New("peer does not serve multiplexed connections")
	errMuxBusy        = errors.New("multiplexed connection backlog full")
	errMuxSilent      = errors.New("peer sent nothing before a call's deadline")
)

// readFrame reads one frame and returns what follows its length, which
// must be at least header bytes (and at most header+maxInternalBody).
func readFrame(r *bufio.Reader, header int) ([]byte, error) {
	var l [4]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(l[:])
	if n < uint32(header) || n > uint32(header+maxInternalBody) {
		return nil, fmt.Errorf("malformed frame: length %d", n)
	}
	f := make([]byte, n)
	if _, err := io.ReadFull(r, f); err != nil {
		return nil, err
	}
	return f, nil
}

// appendFrame appends a frame: length, id, then the op or status in
// tagLen bytes, then body.
func appendFrame(b []byte, id uint64, tag uint16, tagLen int, body []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(8+tagLen+len(body)))
	b = binary.BigEndian.AppendUint64(b, id)
	if tagLen == 1 {
		b = append(b, byte(tag))
	} else {
		b = binary.BigEndian.AppendUint16(b, tag)
	}
	return append(b, body...)
}

// frameWriter queues the frames of one connection and writes them from a
// single goroutine (run): each write carries every frame that queued
// during the previous one.
type frameWriter struct {
	conn net.Conn
	wake chan struct{} // capacity 1: there is something to write
	done chan struct{} // closed by fail

	mu  sync.Mutex
	buf []byte
	err error // why the connection closed, once it has
}

func newFrameWriter(c net.Conn) *frameWriter {
	return &frameWriter{conn: c, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// add queues a frame, or returns why it cannot.
func (w *frameWriter) add(id uint64, tag uint16, tagLen int, body []byte) error {
	w.mu.Lock()
	switch {
	case w.err != nil:
		err := w.err
		w.mu.Unlock()
		return err
	case len(w.buf) > muxMaxQueued:
		w.mu.Unlock()
		return errMuxBusy
	}
	w.buf = appendFrame(w.buf, id, tag, tagLen, body)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return nil
}

// fail closes the connection for err; the first error is kept.
func (w *frameWriter) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
		close(w.done)
		w.conn.Close()
	}
}

// cause is the error fail was given, or err if it was not called.
func (w *frameWriter) cause(err error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	return err
}

// run writes queued frames until the connection fails.
func (w *frameWriter) run() {
	var spare []byte
	for {
		select {
		case <-w.wake:
		case <-w.done:
			return
		}
		// Let the goroutines that are issuing calls right now add theirs
		// to this write: one system call for many frames.
		runtime.Gosched()
		// Swap buffers: callers append to one while this writes the other.
		w.mu.Lock()
		b := w.buf
		w.buf, spare = spare[:0], nil
		w.mu.Unlock()
		if len(b) > 0 {
			_ = w.conn.SetWriteDeadline(time.Now().Add(muxWriteTimeout))
			if _, err := w.conn.Write(b); err != nil {
				w.fail(err)
				return
			}
		}
		if cap(b) <= 1<<20 { // keep a modest buffer for reuse, not a burst's
			spare = b
		}
	}
}

// muxPool keeps one multiplexed connection per peer address, dialed on
// first use and again after it breaks.
type muxPool struct {
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	cluster string
	silent  time.Duration  // muxSilentLimit; tests shorten it
	wg      sync.WaitGroup // the connections' goroutines

	mu     sync.Mutex
	peers  map[string]*muxPeer
	closed bool
}

type muxPeer struct {
	conn        *muxConn      // the connection in use, if any
	dialing     chan struct{} // closed when the dial in progress ends
	err         error         // the last dial's error
	unsupported time.Time     // until then, calls fail with errMuxUnsupported without a dial
}

func newMuxPool(dial func(ctx context.Context, network, addr string) (net.Conn, error), cluster string) *muxPool {
	return &muxPool{dial: dial, cluster: cluster, silent: muxSilentLimit, peers: map[string]*muxPeer{}}
}

// call sends one request to addr and waits for its answer or ctx.
func (p *muxPool) call(ctx context.Context, addr string, op byte, body []byte) (int, []byte, error) {
	c, err := p.conn(ctx, addr)
	if err != nil {
		return 0, nil, err
	}
	return c.call(ctx, op, body)
}

// conn returns addr's connection, dialing it if there is none. Concurrent
// callers wait for one dial rather than each dialing.
func (p *muxPool) conn(ctx context.Context, addr string) (*muxConn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errMuxClosed
	}
	pe := p.peers[addr]
	if pe == nil {
		pe = &muxPeer{}
		p.peers[addr] = pe
	}
	if c := pe.conn; c != nil && !c.broken() {
		p.mu.Unlock()
		return c, nil
	}
	if time.Now().Before(pe.unsupported) {
		p.mu.Unlock()
		return nil, errMuxUnsupported
	}
	if ch := pe.dialing; ch != nil {
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if pe.conn == nil {
			return nil, pe.err
		}
		return pe.conn, nil
	}
	ch := make(chan struct{})
	pe.dialing, pe.conn = ch, nil
	p.mu.Unlock()

	c, err := p.open(ctx, addr)
	p.mu.Lock()
	if err == nil && p.closed {
		c.w.fail(errMuxClosed)
		c, err = nil, errMuxClosed
	}
	pe.dialing, pe.conn, pe.err = nil, c, err
	if errors.Is(err, errMuxUnsupported) {
		pe.unsupported = time.Now().Add(muxRetryUnsupported)
	}
	if c != nil {
		p.wg.Add(2)
		go func() { defer p.wg.Done(); c.w.run() }()
		go func() { defer p.wg.Done(); c.readLoop() }()
	}
	p.mu.Unlock()
	close(ch)
	return c, err
}

// open dials addr and upgrades the connection.
func (p *muxPool) open(ctx context.Context, addr string) (*muxConn, error) {
	conn, err := p.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// The handshake ends by ctx's deadline, or sooner if ctx is cancelled.
	dl, _ := ctx.Deadline()
	_ = conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req := "POST " + internalMux + " HTTP/1.1\r\nHost: " + addr + "\r\nConnection: Upgrade\r\nUpgrade: " + muxProtocol +
		"\r\n" + clusterHeader + ": " + p.cluster + "\r\nContent-Length: 0\r\n\r\n"
	r := bufio.NewReaderSize(conn, muxReadBuffer)
	var resp *http.Response
	if _, err = io.WriteString(conn, req); err == nil {
		resp, err = http.ReadResponse(r, nil)
	}
	switch {
	case err != nil:
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed:
		err = fmt.Errorf("%w (%s)", errMuxUnsupported, resp.Status)
	case resp.StatusCode != http.StatusSwitchingProtocols:
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		err = fmt.Errorf("upgrade refused: %s: %s", resp.Status, msg)
	}
	if err == nil && !stop() {
		err = ctx.Err()
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	c := &muxConn{w: newFrameWriter(conn), r: r, silent: p.silent, pending: map[uint64]chan muxReply{}}
	c.lastRead.Store(time.Now().UnixNano())
	return c, nil
}

// close closes every connection, failing the calls waiting on them, and
// waits for their goroutines. Later calls fail.
func (p *muxPool) close() {
	p.mu.Lock()
	p.closed = true
	for _, pe := range p.peers {
		if pe.conn != nil {
			pe.conn.w.fail(errMuxClosed)
		}
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// muxConn is the calling end of a multiplexed connection.
type muxConn struct {
	w        *frameWriter
	r        *bufio.Reader
	silent   time.Duration
	lastRead atomic.Int64 // when the last frame arrived (or the connection opened), in Unix nanoseconds

	mu      sync.Mutex
	next    uint64                   // the last id used
	pending map[uint64]chan muxReply // nil once the connection failed
}

type muxReply struct {
	status int
	body   []byte
	err    error
}

func (c *muxConn) broken() bool { return c.w.broken() }

// broken reports whether the connection failed.
func (w *frameWriter) broken() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// call sends a request and waits for its answer or ctx.
func (c *muxConn) call(ctx context.Context, op byte, body []byte) (int, []byte, error) {
	ch := make(chan muxReply, 1)
	c.mu.Lock()
	if c.pending == nil {
		c.mu.Unlock()
		return 0, nil, c.w.cause(errMuxClosed)
	}
	c.next++
	id := c.next
	c.pending[id] = ch
	c.mu.Unlock()
	sent := time.Now().UnixNano()
	if err := c.w.add(id, uint16(op), 1, body); err != nil {
		c.forget(id)
		return 0, nil, err
	}
	select {
	case r := <-ch:
		return r.status, r.body, r.err
	case <-ctx.Done():
		c.forget(id)
		// Nothing at all arrived since this call went out, nor for a while
		// before: the peer or the path to it is gone (a half-open connection
		// would otherwise hold every later call until TCP keep-alive
		// notices). Start afresh. A busy peer that merely misses one call's
		// short deadline keeps the connection: closing it would fail every
		// other call in flight on it.
		last := c.lastRead.Load()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) && last < sent && time.Since(time.Unix(0, last)) > c.silent {
			c.w.fail(errMuxSilent)
		}
		return 0, nil, ctx.Err()
	}
}

func (c *muxConn) forget(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// readLoop delivers answers to their callers until the connection fails,
// then fails every call still waiting.
func (c *muxConn) readLoop() {
	var err error
	for {
		var f []byte
		if f, err = readFrame(c.r, muxResponseHeader); err != nil {
			break
		}
		c.lastRead.Store(time.Now().UnixNano())
		id := binary.BigEndian.Uint64(f)
		c.mu.Lock()
		ch := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ch != nil {
			ch <- muxReply{status: int(binary.BigEndian.Uint16(f[8:])), body: f[muxResponseHeader:]}
		}
	}
	c.w.fail(err)
	err = c.w.cause(err)
	c.mu.Lock()
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	for _, ch := range pending {
		ch <- muxReply{err: err}
	}
}
