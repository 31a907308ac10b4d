package faultnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// mockNodes wraps MockTransports (in-memory, synchronous delivery) for
// the named nodes. It returns the wrapped transports, the inner ones and
// the nodes' addresses.
func mockNodes(t *testing.T, n *Network, names ...string) (wrapped map[string]memberlist.NodeAwareTransport, inner map[string]*memberlist.MockTransport, addrs map[string]string) {
	t.Helper()
	mn := &memberlist.MockNetwork{}
	wrapped = make(map[string]memberlist.NodeAwareTransport)
	inner = make(map[string]*memberlist.MockTransport)
	addrs = make(map[string]string)
	for _, name := range names {
		mt := mn.NewTransport(name)
		ip, port, err := mt.FinalAdvertiseAddr("", 0)
		if err != nil {
			t.Fatal(err)
		}
		addrs[name] = net.JoinHostPort(ip.String(), fmt.Sprint(port))
		n.Register(name, addrs[name])
		inner[name] = mt
		w := n.Transport(name, mt)
		wrapped[name] = w
		t.Cleanup(func() {
			if err := w.Shutdown(); err != nil {
				t.Error(err)
			}
		})
	}
	return wrapped, inner, addrs
}

func recvPacket(t *testing.T, tr memberlist.Transport) string {
	t.Helper()
	select {
	case p := <-tr.PacketCh():
		return string(p.Buf)
	case <-time.After(5 * time.Second):
		t.Fatal("no packet")
		return ""
	}
}

func recvStream(t *testing.T, tr memberlist.Transport) net.Conn {
	t.Helper()
	select {
	case c := <-tr.StreamCh():
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no stream")
		return nil
	}
}

func TestTransportPackets(t *testing.T) {
	n := New()
	w, inner, addr := mockNodes(t, n, "a", "b", "c")
	send := func(tr memberlist.Transport, to, msg string) {
		t.Helper()
		if _, err := tr.WriteTo([]byte(msg), addr[to]); err != nil {
			t.Fatalf("WriteTo %s: %v", to, err)
		}
	}
	send(w["a"], "b", "hello")
	if got := recvPacket(t, w["b"]); got != "hello" {
		t.Fatalf("got %q", got)
	}

	n.Partition("a", "b")
	// Dropped by a's side, and reported sent.
	send(w["a"], "b", "lost by the sender")
	// Sent by a raw transport, dropped by b's side. b's filter handles
	// packets in order, so the marker arrives first only if both were
	// dropped.
	send(inner["a"], "b", "lost by the receiver")
	send(w["c"], "b", "marker")
	if got := recvPacket(t, w["b"]); got != "marker" {
		t.Fatalf("got %q across a partition", got)
	}

	n.Heal()
	send(w["b"], "a", "again")
	if got := recvPacket(t, w["a"]); got != "again" {
		t.Fatalf("got %q", got)
	}
}

func TestTransportPacketDelay(t *testing.T) {
	n := New()
	w, _, addr := mockNodes(t, n, "a", "b")
	const d = 50 * time.Millisecond
	n.Delay("a", "b", d)
	buf := []byte("late")
	start := time.Now()
	if _, err := w["a"].WriteToAddress(buf, memberlist.Address{Addr: addr["b"], Name: "b"}); err != nil {
		t.Fatal(err)
	}
	copy(buf, "XXXX") // the caller may reuse its buffer once WriteTo returns
	if got := recvPacket(t, w["b"]); got != "late" {
		t.Fatalf("got %q", got)
	}
	if elapsed := time.Since(start); elapsed < d {
		t.Fatalf("delivered after %v, less than the %v delay", elapsed, d)
	}

	// A packet still delayed at Shutdown is discarded without waiting.
	n.Delay("a", "b", time.Hour)
	if _, err := w["a"].WriteTo([]byte("never"), addr["b"]); err != nil {
		t.Fatal(err)
	}
	if err := w["a"].Shutdown(); err != nil {
		t.Fatal(err)
	}
}

func TestTransportStreams(t *testing.T) {
	n := New()
	w, _, addr := mockNodes(t, n, "a", "b")

	n.Partition("a", "b")
	const timeout = 100 * time.Millisecond
	start := time.Now()
	c, err := w["a"].DialTimeout(addr["b"], timeout)
	if err == nil {
		c.Close()
		t.Fatal("dialed across a partition")
	}
	var ne net.Error
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("not a timeout: %v", err)
	}
	if elapsed := time.Since(start); elapsed < timeout {
		t.Fatalf("gave up after %v, before its %v timeout", elapsed, timeout)
	}

	// A dial waiting on the partition proceeds when it heals.
	dialed := make(chan net.Conn, 1)
	go func() {
		c, err := w["a"].DialAddressTimeout(memberlist.Address{Addr: addr["b"], Name: "b"}, time.Minute)
		if err != nil {
			t.Error(err)
		}
		dialed <- c
	}()
	waitFor(t, "a dial waiting", 5*time.Second, func() bool { return n.waiting() == 1 })
	n.Heal()
	server := recvStream(t, w["b"])
	defer server.Close()
	client := <-dialed
	if client == nil {
		t.FailNow()
	}
	defer client.Close()

	// Writes are delayed. (net.Pipe is synchronous: read concurrently.)
	const d = 50 * time.Millisecond
	n.Delay("a", "b", d)
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 4)
		k, _ := io.ReadFull(server, b)
		got <- string(b[:k])
	}()
	start = time.Now()
	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "ping" {
		t.Fatalf("got %q", s)
	}
	if elapsed := time.Since(start); elapsed < d {
		t.Fatalf("write took %v, less than the %v delay", elapsed, d)
	}

	// A partition cuts the stream: both ends see it promptly.
	n.Partition("a", "b")
	if _, err := client.Read(make([]byte, 1)); !errors.Is(err, ErrPartitioned) {
		t.Fatalf("client Read: %v", err)
	}
	if _, err := server.Read(make([]byte, 1)); err == nil {
		t.Fatal("server Read passed a cut stream")
	}
}

// Incoming streams whose source address resolves are filtered by the
// receiver too. MockTransport streams come from "pipe", which this test
// registers as a's address.
func TestTransportIncomingStreams(t *testing.T) {
	n := New()
	w, inner, addr := mockNodes(t, n, "a", "b")
	n.Register("a", "pipe")

	n.Partition("a", "b")
	// A raw dial bypasses a's side; b's side closes the stream.
	raw, err := inner["a"].DialTimeout(addr["b"], time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Read(make([]byte, 1)); err == nil {
		t.Fatal("a stream across a partition was accepted")
	}
	raw.Close()

	n.Heal()
	raw, err = inner["a"].DialTimeout(addr["b"], time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	server := recvStream(t, w["b"])
	defer server.Close()
	n.Isolate("b")
	if _, err := server.Read(make([]byte, 1)); !errors.Is(err, ErrPartitioned) {
		t.Fatalf("accepted stream not cut: %v", err)
	}
}

// Shutdown ends dials waiting on a blocked link.
func TestTransportShutdownEndsDials(t *testing.T) {
	n := New()
	w, _, addr := mockNodes(t, n, "a", "b")
	n.Isolate("a")
	errc := make(chan error, 1)
	go func() {
		c, err := w["a"].DialTimeout(addr["b"], time.Hour)
		if err == nil {
			c.Close()
		}
		errc <- err
	}()
	waitFor(t, "a dial waiting", 5*time.Second, func() bool { return n.waiting() == 1 })
	if err := w["a"].Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("dial after Shutdown: %v", err)
	}
}

// liveness records, from memberlist's events, which members a node sees
// alive. (Node.State from Members() is read by memberlist under its own
// lock, so tests cannot read it without a race.)
type liveness struct {
	mu    sync.Mutex
	alive map[string]bool
}

func (l *liveness) set(name string, alive bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.alive[name] = alive
}

func (l *liveness) NotifyJoin(n *memberlist.Node)   { l.set(n.Name, true) }
func (l *liveness) NotifyLeave(n *memberlist.Node)  { l.set(n.Name, false) }
func (l *liveness) NotifyUpdate(n *memberlist.Node) {}

func (l *liveness) sees(name string, alive bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.alive[name] == alive
}

type member struct {
	name string
	addr string
	ml   *memberlist.Memberlist
	view *liveness
}

func startMember(t *testing.T, n *Network, name string) *member {
	t.Helper()
	cfg := memberlist.DefaultLocalConfig()
	cfg.Name = name
	cfg.BindAddr = "127.0.0.1"
	// NetTransport logs through its Logger without a nil check.
	cfg.Logger = log.New(io.Discard, "", 0)
	cfg.ProbeInterval = 100 * time.Millisecond
	cfg.ProbeTimeout = 50 * time.Millisecond
	cfg.GossipInterval = 20 * time.Millisecond
	cfg.PushPullInterval = 500 * time.Millisecond
	cfg.TCPTimeout = 300 * time.Millisecond
	cfg.SuspicionMult = 2
	cfg.GossipToTheDeadTime = time.Minute

	// Port 0: the kernel picks the TCP port and the UDP one must match,
	// which can collide in a busy test run, so retry as memberlist does.
	var nt *memberlist.NetTransport
	var err error
	for range 10 {
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{cfg.BindAddr},
			Logger:    cfg.Logger,
		})
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	cfg.BindPort = nt.GetAutoBindPort()
	cfg.AdvertisePort = cfg.BindPort
	m := &member{name: name, addr: net.JoinHostPort(cfg.BindAddr, fmt.Sprint(cfg.BindPort)), view: &liveness{alive: map[string]bool{}}}
	cfg.Events = m.view
	n.Register(name, m.addr)
	cfg.Transport = n.Transport(name, nt)
	m.ml, err = memberlist.Create(cfg)
	if err != nil {
		cfg.Transport.Shutdown()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.ml.Shutdown(); err != nil {
			t.Error(err)
		}
	})
	return m
}

// members returns the names of the members m sees, not dead or left.
func (m *member) members() []string {
	var names []string
	for _, node := range m.ml.Members() {
		names = append(names, node.Name)
	}
	return names
}

func TestMemberlistIsolate(t *testing.T) {
	n := New()
	ms := []*member{startMember(t, n, "a"), startMember(t, n, "b"), startMember(t, n, "c")}
	for _, m := range ms[1:] {
		if _, err := m.ml.Join([]string{ms[0].addr}); err != nil {
			t.Fatal(err)
		}
	}
	allSee := func(of []*member, names []string, alive bool) func() bool {
		return func() bool {
			for _, m := range of {
				for _, name := range names {
					if name != m.name && !m.view.sees(name, alive) {
						return false
					}
				}
			}
			return true
		}
	}
	all := []string{"a", "b", "c"}
	waitFor(t, "all alive", 10*time.Second, allSee(ms, all, true))

	start := time.Now()
	n.Isolate("c")
	waitFor(t, "a and b see c dead", 10*time.Second, allSee(ms[:2], []string{"c"}, false))
	waitFor(t, "c sees a and b dead", 10*time.Second, allSee(ms[2:], []string{"a", "b"}, false))
	for _, m := range ms[:2] {
		if slices.Contains(m.members(), "c") {
			t.Fatalf("%s still lists c: %v", m.name, m.members())
		}
	}
	// a and b still see each other.
	if !allSee(ms[:2], []string{"a", "b"}, true)() {
		t.Fatal("a and b lost each other")
	}
	t.Logf("isolation detected after %v", time.Since(start))

	start = time.Now()
	n.Heal()
	// memberlist gossips to dead members only while it has broadcasts
	// queued, and push/pulls only with live ones, so once the news of
	// c's death has spread nobody contacts c again. Rejoin, as Serf's
	// reconnect loop (or quorumkv's membership layer) does.
	if _, err := ms[2].ml.Join([]string{ms[0].addr, ms[1].addr}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "all alive again", 10*time.Second, allSee(ms, all, true))
	t.Logf("recovered after %v", time.Since(start))
}

// memberlist dials with time.Until(deadline), which may have passed: a
// negative timeout has expired, as with net.Dialer, and must not wait.
func TestTransportExpiredDial(t *testing.T) {
	n := New()
	w, _, addr := mockNodes(t, n, "a", "b")
	n.Partition("a", "b")
	c, err := w["a"].DialTimeout(addr["b"], -time.Millisecond)
	if err == nil {
		c.Close()
		t.Fatal("dialed across a partition")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("not expired: %v", err)
	}
}
