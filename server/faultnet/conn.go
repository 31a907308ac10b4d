package faultnet

import (
	"context"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Dialer returns a DialContext for node from to use in its http.Transport.
// It is DialerWith(from, nil).
func (n *Network) Dialer(from string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return n.DialerWith(from, nil)
}

// DialerWith returns a DialContext for node from that dials with d (a zero
// net.Dialer if nil).
//
// Dialing a peer across a blocked link waits until ctx is done, or until
// d.Timeout passes if d has one, and then returns the context's error
// wrapped in a *LinkError (a net.Error whose Timeout is true on a
// deadline); if the link heals first, the dial proceeds. Otherwise it
// waits for the link's delay, dials, and returns a connection registered
// with the Network: a partition closes it, each Write waits for the link's
// delay first, and Read and Write fail promptly with ErrPartitioned once
// the link is blocked.
//
// Faults act where connections are dialed; the accepting side (an
// http.Server) is not wrapped and sees a cut connection close. A delay is
// paid on the dial and on each Write call of the dialing node, not on
// reads: on one connection only the dialer's writes (the requests) are
// delayed; the reverse direction is delayed on connections the peer dials.
//
// Since Go 1.23 http.Transport dials with a context detached from the
// request's cancellation, so a dial without d.Timeout keeps waiting after
// its request gave up, until the link heals or the transport's
// CloseIdleConnections cancels it. Set d.Timeout to bound it, as the
// kernel's connect timeout bounds a real one.
func (n *Network) DialerWith(from string, d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if d == nil {
		d = &net.Dialer{}
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if d.Timeout != 0 { // negative: expired, as in net.Dialer
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d.Timeout)
			defer cancel()
		}
		to := n.resolve(addr)
		c, err := n.dial(ctx, from, to, func(ctx context.Context) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		})
		if err != nil {
			if _, ok := err.(*LinkError); ok {
				err = &net.OpError{Op: "dial", Net: network, Addr: stringAddr{network, addr}, Err: err}
			}
			return nil, err
		}
		return c, nil
	}
}

// dial waits for the link from → to to be unblocked and for its delay,
// then dials with dial and tracks the connection.
func (n *Network) dial(ctx context.Context, from, to string, dial func(context.Context) (net.Conn, error)) (net.Conn, error) {
	if err := n.waitUnblocked(ctx, from, to); err != nil {
		return nil, err
	}
	if err := sleep(ctx, n.delayOf(from, to)); err != nil {
		return nil, err
	}
	inner, err := dial(ctx)
	if err != nil {
		return nil, err
	}
	return n.wrap(inner, from, to)
}

// wrap returns inner as a connection of the link from → to, tracked by
// the Network.
func (n *Network) wrap(inner net.Conn, from, to string) (*conn, error) {
	c := &conn{Conn: inner, n: n, from: from, to: to, closed: make(chan struct{})}
	if err := n.track(c); err != nil {
		return nil, err
	}
	return c, nil
}

// conn is a connection across the link from → to.
type conn struct {
	net.Conn
	n        *Network
	from, to string

	closeOnce sync.Once
	closed    chan struct{} // closed by Close
	wasCut    atomic.Bool   // closed by a partition
	// writeDeadline is the write deadline in Unix nanoseconds, 0 if none;
	// a delayed Write honours it while it waits.
	writeDeadline atomic.Int64
}

// Read implements net.Conn. Reads are not delayed: the delay of the
// reverse link applies to the peer's writes when the peer dialed.
func (c *conn) Read(b []byte) (int, error) {
	if err := c.check("read"); err != nil {
		return 0, err
	}
	k, err := c.Conn.Read(b)
	return k, c.mapErr("read", err)
}

// Write implements net.Conn: it waits for the link's delay (at most until
// the write deadline), then writes.
func (c *conn) Write(b []byte) (int, error) {
	if err := c.check("write"); err != nil {
		return 0, err
	}
	if d := c.n.delayOf(c.from, c.to); d > 0 {
		if err := c.wait(d); err != nil {
			return 0, err
		}
		if err := c.check("write"); err != nil {
			return 0, err
		}
	}
	k, err := c.Conn.Write(b)
	return k, c.mapErr("write", err)
}

// Close implements net.Conn.
func (c *conn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		c.n.untrack(c)
		close(c.closed)
		err = c.Conn.Close()
	})
	return err
}

// SetDeadline implements net.Conn.
func (c *conn) SetDeadline(t time.Time) error {
	c.setWriteDeadline(t)
	return c.Conn.SetDeadline(t)
}

// SetWriteDeadline implements net.Conn.
func (c *conn) SetWriteDeadline(t time.Time) error {
	c.setWriteDeadline(t)
	return c.Conn.SetWriteDeadline(t)
}

func (c *conn) setWriteDeadline(t time.Time) {
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	c.writeDeadline.Store(ns)
}

// cut closes c because its link is blocked.
func (c *conn) cut() {
	c.wasCut.Store(true)
	c.Close()
}

// check fails, cutting c, if its link is blocked.
func (c *conn) check(op string) error {
	if c.wasCut.Load() || c.n.Blocked(c.from, c.to) {
		c.cut()
		return c.opError(op, &LinkError{From: c.from, To: c.to, Err: ErrPartitioned})
	}
	return nil
}

// mapErr reports the error of an operation that a cut interrupted as the
// partition it is.
func (c *conn) mapErr(op string, err error) error {
	if err != nil && c.wasCut.Load() {
		return c.opError(op, &LinkError{From: c.from, To: c.to, Err: ErrPartitioned})
	}
	return err
}

// wait sleeps for d, or until the write deadline or Close.
func (c *conn) wait(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	var deadline <-chan time.Time
	if ns := c.writeDeadline.Load(); ns != 0 {
		if left := time.Until(time.Unix(0, ns)); left < d {
			dt := time.NewTimer(max(left, 0))
			defer dt.Stop()
			deadline = dt.C
		}
	}
	select {
	case <-t.C:
		return nil
	case <-deadline:
		return c.opError("write", os.ErrDeadlineExceeded)
	case <-c.closed:
		if c.wasCut.Load() {
			return c.opError("write", &LinkError{From: c.from, To: c.to, Err: ErrPartitioned})
		}
		return c.opError("write", net.ErrClosed)
	}
}

func (c *conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// stringAddr is a net.Addr for an address that was not dialed.
type stringAddr struct{ net, addr string }

func (a stringAddr) Network() string { return a.net }
func (a stringAddr) String() string  { return a.addr }
