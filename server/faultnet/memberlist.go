package faultnet

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Transport wraps inner, the gossip transport of node from, so that the
// Network's faults apply to it:
//
//   - A packet (WriteTo, WriteToAddress) to a blocked peer is dropped and
//     reported sent, as UDP would. A packet on a delayed link is sent
//     after the delay, without blocking the caller; it is dropped if the
//     link is blocked by then.
//   - A stream dial (DialTimeout, DialAddressTimeout) to a blocked peer
//     waits until its timeout and then fails with a *LinkError that is a
//     timeout; if the link heals first, it proceeds. A delayed dial waits
//     for the delay first. Dialed streams are cut by a partition and
//     delay their writes, like the connections of Dialer.
//   - An incoming packet from a blocked peer is dropped: its From address
//     is resolved through Register (memberlist's NetTransport sends from
//     its gossip port, so it resolves).
//   - An incoming stream is dropped if its remote address resolves to a
//     blocked peer, and cut by a later partition if it resolves at all.
//     A TCP stream's source port is ephemeral, though, so it normally
//     resolves to no node: streams rely on the sender's side, where the
//     dialing node's own Transport blocks the dial and cuts the stream.
//     Every node must therefore use such a Transport, of one shared
//     Network in-process (or of Networks given the same faults in
//     process-level tests).
//
// A peer is resolved from its address, or, if the address is not
// registered, from the memberlist node name in a memberlist.Address when
// that name is registered as a node.
//
// Shutdown stops the wrapper's goroutines and then inner: pending delayed
// packets are discarded, waiting dials fail, and incoming packets and
// streams are discarded while inner shuts down (inner's listeners may be
// blocked handing one over), after which the filter goroutines exit.
func (n *Network) Transport(from string, inner memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
	ctx, cancel := context.WithCancel(context.Background())
	t := &transport{
		n:        n,
		from:     from,
		inner:    inner,
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
		ctx:      ctx,
		cancel:   cancel,
		stopping: make(chan struct{}),
		done:     make(chan struct{}),
		timers:   make(map[*time.Timer]struct{}),
	}
	t.filters.Add(2)
	go t.filterPackets()
	go t.filterStreams()
	return t
}

// transport is the memberlist.NodeAwareTransport of Network.Transport.
type transport struct {
	n     *Network
	from  string
	inner memberlist.NodeAwareTransport

	packetCh chan *memberlist.Packet
	streamCh chan net.Conn

	// ctx is canceled by Shutdown; it ends waiting dials.
	ctx    context.Context
	cancel context.CancelFunc
	// stopping is closed by Shutdown before inner shuts down: the
	// filters then discard what they receive. done is closed after inner
	// shut down: the filters exit.
	stopping, done chan struct{}
	filters        sync.WaitGroup

	mu     sync.Mutex
	closed bool
	timers map[*time.Timer]struct{} // delayed packets not yet sent
	sends  sync.WaitGroup           // delayed packets being sent

	shutdownOnce sync.Once
	shutdownErr  error
}

var _ memberlist.NodeAwareTransport = (*transport)(nil)

// FinalAdvertiseAddr implements memberlist.Transport.
func (t *transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

// WriteTo implements memberlist.Transport.
func (t *transport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress implements memberlist.NodeAwareTransport.
func (t *transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	to := t.peer(a)
	if t.n.Blocked(t.from, to) {
		return time.Now(), nil
	}
	d := t.n.delayOf(t.from, to)
	if d <= 0 {
		return t.inner.WriteToAddress(b, a)
	}
	buf := append([]byte(nil), b...) // the caller may reuse b
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return time.Now(), nil
	}
	t.sends.Add(1)
	var timer *time.Timer
	// The callback takes t.mu, held here, so timer is set before it runs.
	timer = time.AfterFunc(d, func() {
		defer t.sends.Done()
		t.mu.Lock()
		delete(t.timers, timer)
		closed := t.closed
		t.mu.Unlock()
		if closed || t.n.Blocked(t.from, to) {
			return
		}
		// A lost packet is what UDP gives anyway; nobody waits for the
		// error.
		_, _ = t.inner.WriteToAddress(buf, a)
	})
	t.timers[timer] = struct{}{}
	return time.Now(), nil
}

// PacketCh implements memberlist.Transport.
func (t *transport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// DialTimeout implements memberlist.Transport.
func (t *transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (t *transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	// As with net.Dialer, a zero timeout means none and a negative one
	// has expired (memberlist passes time.Until(deadline)).
	ctx := t.ctx
	if timeout != 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	c, err := t.n.dial(ctx, t.from, t.peer(a), func(ctx context.Context) (net.Conn, error) {
		left := timeout
		if dl, ok := ctx.Deadline(); ok {
			left = time.Until(dl)
			if left <= 0 {
				return nil, context.DeadlineExceeded
			}
		}
		return t.inner.DialAddressTimeout(a, left)
	})
	if err != nil {
		if _, ok := err.(*LinkError); ok {
			err = &net.OpError{Op: "dial", Net: "tcp", Addr: stringAddr{"tcp", a.Addr}, Err: err}
		}
		return nil, err
	}
	return c, nil
}

// StreamCh implements memberlist.Transport.
func (t *transport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown implements memberlist.Transport. It is safe to call more than
// once; later calls return the first call's result.
func (t *transport) Shutdown() error {
	t.shutdownOnce.Do(func() {
		t.mu.Lock()
		t.closed = true
		for timer := range t.timers {
			if timer.Stop() {
				t.sends.Done()
			}
		}
		clear(t.timers)
		t.mu.Unlock()
		t.cancel()
		t.sends.Wait()

		close(t.stopping)
		t.shutdownErr = t.inner.Shutdown()
		close(t.done)
		t.filters.Wait()
	})
	return t.shutdownErr
}

// peer returns the node a is registered for, or "".
func (t *transport) peer(a memberlist.Address) string {
	if node := t.n.resolve(a.Addr); node != "" {
		return node
	}
	if a.Name != "" {
		t.n.mu.RLock()
		defer t.n.mu.RUnlock()
		if t.n.nodes[a.Name] {
			return a.Name
		}
	}
	return ""
}

// filterPackets forwards inner's packets to packetCh, dropping those from
// blocked peers, until Shutdown.
func (t *transport) filterPackets() {
	defer t.filters.Done()
	in := t.inner.PacketCh()
	for {
		select {
		case p := <-in:
			var src string
			if p.From != nil {
				src = t.n.resolve(p.From.String())
			}
			if t.n.Blocked(src, t.from) {
				continue
			}
			select {
			case t.packetCh <- p:
			case <-t.stopping:
			}
		case <-t.done:
			return
		}
	}
}

// filterStreams forwards inner's streams to streamCh, closing those from
// blocked peers, until Shutdown.
func (t *transport) filterStreams() {
	defer t.filters.Done()
	in := t.inner.StreamCh()
	for {
		select {
		case c := <-in:
			if out := t.accept(c); out != nil {
				select {
				case t.streamCh <- out:
				case <-t.stopping:
					out.Close()
				}
			}
		case <-t.done:
			return
		}
	}
}

// accept returns the incoming stream c to hand to memberlist, or nil if it
// was dropped.
func (t *transport) accept(c net.Conn) net.Conn {
	var src string
	if c.RemoteAddr() != nil {
		src = t.n.resolve(c.RemoteAddr().String())
	}
	if src == "" {
		return c // unknown source: the sender's side applies the faults
	}
	// Tracked as a connection of the link from this node to src.
	wc, err := t.n.wrap(c, t.from, src)
	if err != nil {
		return nil // blocked; wrap closed c
	}
	return wc
}
