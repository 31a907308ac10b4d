package faultnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// httpNode is an HTTP server and a client that dials through the Network.
type httpNode struct {
	name string
	addr string
	tr   *http.Transport
	open atomic.Int64 // connections open on the server
}

func startHTTPNode(t *testing.T, n *Network, name string) *httpNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &httpNode{name: name, addr: ln.Addr().String()}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }),
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				h.open.Add(1)
			case http.StateClosed, http.StateHijacked:
				h.open.Add(-1)
			}
		},
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	h.tr = &http.Transport{DialContext: n.Dialer(name), MaxIdleConnsPerHost: 4}
	n.Register(name, h.addr)
	t.Cleanup(func() {
		// Also cancels dials still waiting on a blocked link.
		h.tr.CloseIdleConnections()
		srv.Close()
		<-served
	})
	return h
}

// get asks peer for its name, giving up after timeout.
func (h *httpNode) get(peer *httpNode, timeout time.Duration) (string, error) {
	c := &http.Client{Transport: h.tr, Timeout: timeout}
	resp, err := c.Get("http://" + peer.addr + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func mustGet(t *testing.T, from, to *httpNode) {
	t.Helper()
	got, err := from.get(to, 10*time.Second)
	if err != nil || got != to.name {
		t.Fatalf("%s -> %s: %q, %v", from.name, to.name, got, err)
	}
}

// mustTimeOut checks that a request from → to hangs until its timeout,
// as across a real partition, rather than being refused.
func mustTimeOut(t *testing.T, from, to *httpNode) {
	t.Helper()
	if err := timesOut(from, to); err != nil {
		t.Fatal(err)
	}
}

func timesOut(from, to *httpNode) error {
	const timeout = 200 * time.Millisecond
	start := time.Now()
	got, err := from.get(to, timeout)
	elapsed := time.Since(start)
	if err == nil {
		return fmt.Errorf("%s -> %s passed a partition: %q", from.name, to.name, got)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return fmt.Errorf("%s -> %s: not a timeout: %v", from.name, to.name, err)
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
		return fmt.Errorf("%s -> %s: refused instead of hanging: %v", from.name, to.name, err)
	}
	if elapsed < timeout {
		return fmt.Errorf("%s -> %s failed after %v, before its %v timeout: %v", from.name, to.name, elapsed, timeout, err)
	}
	return nil
}

func TestHTTPPartition(t *testing.T) {
	n := New()
	a, b := startHTTPNode(t, n, "a"), startHTTPNode(t, n, "b")
	mustGet(t, a, b)
	mustGet(t, b, a)
	waitFor(t, "keep-alive connections open", 5*time.Second, func() bool {
		return a.open.Load() == 1 && b.open.Load() == 1
	})

	n.Partition("a", "b")
	// The pooled connections were cut: the servers see them close
	// before any new request is made.
	waitFor(t, "keep-alive connections closed by the partition", 5*time.Second, func() bool {
		return a.open.Load() == 0 && b.open.Load() == 0
	})
	mustTimeOut(t, a, b)
	mustTimeOut(t, b, a)

	n.Heal()
	mustGet(t, a, b)
	mustGet(t, b, a)
}

func TestHTTPIsolate(t *testing.T) {
	n := New()
	a, b, c := startHTTPNode(t, n, "a"), startHTTPNode(t, n, "b"), startHTTPNode(t, n, "c")
	mustGet(t, a, c)
	mustGet(t, c, b)

	n.Isolate("c")
	var wg sync.WaitGroup
	for _, l := range [][2]*httpNode{{a, c}, {c, a}, {b, c}, {c, b}} {
		wg.Go(func() {
			if err := timesOut(l[0], l[1]); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	mustGet(t, a, b)
	mustGet(t, b, a)

	n.Heal()
	mustGet(t, a, c)
	mustGet(t, c, b)
}

func TestHTTPDelay(t *testing.T) {
	n := New()
	a, b := startHTTPNode(t, n, "a"), startHTTPNode(t, n, "b")
	const d = 100 * time.Millisecond
	n.Delay("a", "b", d)
	// The first request pays for the dial and the write, the second, on a
	// kept-alive connection, for the write.
	for i := range 2 {
		for _, l := range [][2]*httpNode{{a, b}, {b, a}} {
			start := time.Now()
			mustGet(t, l[0], l[1])
			if elapsed := time.Since(start); elapsed < d {
				t.Fatalf("request %d %s -> %s took %v, less than the %v delay", i, l[0].name, l[1].name, elapsed, d)
			}
		}
	}
	n.Delay("a", "b", 0)
	mustGet(t, a, b)
}

// A dial waiting on a blocked link proceeds when the link heals, as a
// retransmitted SYN would.
func TestHTTPDialProceedsOnHeal(t *testing.T) {
	n := New()
	a, b := startHTTPNode(t, n, "a"), startHTTPNode(t, n, "b")
	n.Partition("a", "b")
	done := make(chan error, 1)
	go func() {
		got, err := a.get(b, 10*time.Second)
		if err == nil && got != "b" {
			err = fmt.Errorf("got %q", got)
		}
		done <- err
	}()
	waitFor(t, "a dial waiting", 5*time.Second, func() bool { return n.waiting() == 1 })
	n.Heal()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestDialerTimeout(t *testing.T) {
	n := New()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	n.Register("b", ln.Addr().String())
	n.Partition("a", "b")
	const timeout = 100 * time.Millisecond
	dial := n.DialerWith("a", &net.Dialer{Timeout: timeout})
	start := time.Now()
	c, err := dial(context.Background(), "tcp", ln.Addr().String())
	if err == nil {
		c.Close()
		t.Fatal("dialed across a partition")
	}
	var ne net.Error
	var le *LinkError
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() || !errors.As(err, &le) {
		t.Fatalf("not a link timeout: %v", err)
	}
	if le.From != "a" || le.To != "b" {
		t.Fatalf("link %s -> %s", le.From, le.To)
	}
	if elapsed := time.Since(start); elapsed < timeout {
		t.Fatalf("gave up after %v, before the %v timeout", elapsed, timeout)
	}
}

// An established connection fails promptly once its link is blocked:
// a pending Read returns, and later Reads and Writes fail.
func TestConnCutOnPartition(t *testing.T) {
	n := New()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.Register("b", ln.Addr().String())
	accepted := make(chan net.Conn, 1)
	go func() {
		defer close(accepted)
		if c, err := ln.Accept(); err == nil {
			accepted <- c
		}
	}()
	defer func() {
		ln.Close()
		if c, ok := <-accepted; ok {
			c.Close()
		}
	}()

	c, err := n.Dialer("a")(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	read := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		read <- err
	}()

	n.Partition("b", "a")
	if err := <-read; !errors.Is(err, ErrPartitioned) {
		t.Fatalf("pending Read: %v", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, ErrPartitioned) {
		t.Fatalf("Write: %v", err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, ErrPartitioned) {
		t.Fatalf("Read: %v", err)
	}
}
