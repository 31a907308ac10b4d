package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quorumkv/quorumkv/storage"
)

// fakePeer is the serving end of multiplexed connections that a muxPool
// dials over net.Pipe: it answers the upgrade with status, then hands each
// connection's frames to serve.
type fakePeer struct {
	status int // the upgrade's answer; 101 to accept
	serve  func(r *bufio.Reader, w io.Writer)
	dials  atomic.Int32
	wg     sync.WaitGroup
}

func (p *fakePeer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	p.dials.Add(1)
	client, srv := net.Pipe()
	p.wg.Go(func() {
		defer srv.Close()
		r := bufio.NewReader(srv)
		req, err := http.ReadRequest(r)
		if err != nil {
			return
		}
		if req.URL.Path != internalMux || req.Header.Get("Upgrade") != muxProtocol || req.Header.Get(clusterHeader) != "n=3" {
			fmt.Fprintf(srv, "HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad")
			return
		}
		if p.status != http.StatusSwitchingProtocols {
			fmt.Fprintf(srv, "HTTP/1.1 %d %s\r\nContent-Length: 8\r\n\r\nmismatch", p.status, http.StatusText(p.status))
			return
		}
		fmt.Fprintf(srv, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", muxProtocol)
		p.serve(r, srv)
	})
	return client, nil
}

// readRequests reads request frames until the connection ends.
func readRequests(r *bufio.Reader, each func(id uint64, op byte, body []byte)) {
	for {
		f, err := readFrame(r, muxRequestHeader)
		if err != nil {
			return
		}
		each(binary.BigEndian.Uint64(f), f[8], f[muxRequestHeader:])
	}
}

func shortCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Many calls share one connection, and each gets its own answer although
// the peer answers them in the reverse order.
func TestMuxCallsShareOneConnection(t *testing.T) {
	const calls = 50
	peer := &fakePeer{status: http.StatusSwitchingProtocols}
	peer.serve = func(r *bufio.Reader, w io.Writer) {
		var got [][]byte
		readRequests(r, func(id uint64, op byte, body []byte) {
			got = append(got, appendFrame(nil, id, 200+uint16(op), 2, append([]byte("echo "), body...)))
			if len(got) == calls {
				slices.Reverse(got)
				_, _ = w.Write(bytes.Join(got, nil))
			}
		})
	}
	pool := newMuxPool(peer.dial, "n=3")
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for i := range calls {
		wg.Go(func() {
			status, body, err := pool.call(shortCtx(t, 10*time.Second), "peer:1", byte(i%4+1), []byte(fmt.Sprint(i)))
			if err == nil && (status != 200+i%4+1 || string(body) != fmt.Sprint("echo ", i)) {
				err = fmt.Errorf("call %d: got %d %q", i, status, body)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if d := peer.dials.Load(); d != 1 {
		t.Fatalf("%d dials for concurrent calls to one peer, want 1", d)
	}
	pool.close()
	peer.wg.Wait()
}

// A peer that answers nothing costs a call its deadline, not more; a
// connection silent for longer than the limit is then dropped and the next
// call dials afresh.
func TestMuxSilentPeerHonoursDeadlineAndRedials(t *testing.T) {
	peer := &fakePeer{status: http.StatusSwitchingProtocols}
	peer.serve = func(r *bufio.Reader, w io.Writer) { readRequests(r, func(uint64, byte, []byte) {}) }
	pool := newMuxPool(peer.dial, "n=3")
	pool.silent = 50 * time.Millisecond
	defer func() { pool.close(); peer.wg.Wait() }()
	start := time.Now()
	_, _, err := pool.call(shortCtx(t, 100*time.Millisecond), "peer:1", 1, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("call to a silent peer: %v, want the deadline", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("call to a silent peer took %v", took)
	}
	_, _, err = pool.call(shortCtx(t, 100*time.Millisecond), "peer:1", 1, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second call: %v", err)
	}
	if d := peer.dials.Load(); d != 2 {
		t.Fatalf("%d dials, want 2: the silent connection is dropped after a deadline", d)
	}
}

// A peer that is merely slow, answering other calls, keeps its connection
// when one call misses its deadline: the calls in flight with it still get
// their answers.
func TestMuxSlowCallKeepsConnection(t *testing.T) {
	peer := &fakePeer{status: http.StatusSwitchingProtocols}
	peer.serve = func(r *bufio.Reader, w io.Writer) {
		readRequests(r, func(id uint64, op byte, body []byte) {
			if op == 2 { // op 2 answers; op 1 never does
				_, _ = w.Write(appendFrame(nil, id, 204, 2, nil))
			}
		})
	}
	pool := newMuxPool(peer.dial, "n=3")
	pool.silent = 50 * time.Millisecond
	defer func() { pool.close(); peer.wg.Wait() }()
	if status, _, err := pool.call(shortCtx(t, 5*time.Second), "peer:1", 2, nil); err != nil || status != 204 {
		t.Fatalf("first call: %d, %v", status, err)
	}
	slow := make(chan error)
	go func() {
		_, _, err := pool.call(shortCtx(t, 200*time.Millisecond), "peer:1", 1, nil)
		slow <- err
	}()
	// Keep the connection talking while the slow call waits out its deadline.
	for done := false; !done; {
		select {
		case err := <-slow:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("slow call: %v", err)
			}
			done = true
		default:
			if _, _, err := pool.call(shortCtx(t, 5*time.Second), "peer:1", 2, nil); err != nil {
				t.Fatalf("a call beside the slow one: %v", err)
			}
		}
	}
	if d := peer.dials.Load(); d != 1 {
		t.Fatalf("%d dials: a connection that kept answering was dropped", d)
	}
}

// A refused upgrade (another cluster's node) is an error naming the answer.
func TestMuxUpgradeRefused(t *testing.T) {
	peer := &fakePeer{status: http.StatusConflict}
	pool := newMuxPool(peer.dial, "n=3")
	defer func() { pool.close(); peer.wg.Wait() }()
	_, _, err := pool.call(shortCtx(t, 5*time.Second), "peer:1", 1, nil)
	if err == nil || !strings.Contains(err.Error(), "409") || !strings.Contains(err.Error(), "mismatch") {
		t.Fatalf("refused upgrade: %v", err)
	}
}

// A malformed frame from the peer fails the calls waiting on the
// connection at once, and the next call dials again.
func TestMuxMalformedFrameFailsPendingCalls(t *testing.T) {
	peer := &fakePeer{status: http.StatusSwitchingProtocols}
	peer.serve = func(r *bufio.Reader, w io.Writer) {
		readRequests(r, func(uint64, byte, []byte) {
			_, _ = w.Write([]byte{0, 0, 0, 3, 1, 2, 3}) // shorter than a response header
		})
	}
	pool := newMuxPool(peer.dial, "n=3")
	defer func() { pool.close(); peer.wg.Wait() }()
	for i := range 2 {
		_, _, err := pool.call(shortCtx(t, 10*time.Second), "peer:1", 1, nil)
		if err == nil || !strings.Contains(err.Error(), "malformed frame") {
			t.Fatalf("call %d: %v, want the malformed frame", i, err)
		}
	}
	if d := peer.dials.Load(); d != 2 {
		t.Fatalf("%d dials, want 2", d)
	}
}

// Closing the pool fails the calls in flight and every later call.
func TestMuxCloseFailsCalls(t *testing.T) {
	peer := &fakePeer{status: http.StatusSwitchingProtocols}
	received := make(chan struct{})
	peer.serve = func(r *bufio.Reader, w io.Writer) {
		readRequests(r, func(uint64, byte, []byte) { close(received) })
	}
	pool := newMuxPool(peer.dial, "n=3")
	done := make(chan error)
	go func() {
		_, _, err := pool.call(shortCtx(t, time.Minute), "peer:1", 1, nil)
		done <- err
	}()
	<-received
	pool.close()
	if err := <-done; !errors.Is(err, errMuxClosed) {
		t.Fatalf("call in flight at close: %v", err)
	}
	if _, _, err := pool.call(shortCtx(t, time.Second), "peer:1", 1, nil); !errors.Is(err, errMuxClosed) {
		t.Fatalf("call after close: %v", err)
	}
	peer.wg.Wait()
}

// upgradeMux opens a raw multiplexed connection to a node.
func upgradeMux(t *testing.T, addr, cluster string) (net.Conn, *bufio.Reader, int) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n%s: %s\r\nContent-Length: 0\r\n\r\n",
		internalMux, addr, muxProtocol, clusterHeader, cluster)
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	return conn, r, resp.StatusCode
}

// A node answers frames over a raw connection: an apply, a get of what it
// applied, an unknown operation with 400; a garbage frame closes that
// connection and nothing else; a node of another cluster is refused.
func TestMuxServesNode(t *testing.T) {
	c := newTestCluster(t, 1, func(cfg *Config) { cfg.Ring.N = 1; cfg.R = 1; cfg.W = 1 })
	n := c.anyNode()
	addr := c.peers["n1"]
	if _, _, status := upgradeMux(t, addr, "n=5,partitions=1"); status != http.StatusConflict {
		t.Fatalf("upgrade from another cluster: %d, want 409", status)
	}
	conn, r, status := upgradeMux(t, addr, n.cluster)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %d", status)
	}
	k := n.keyFor("b", "k")
	o := &storage.Object{Siblings: []storage.Sibling{{Dot: storage.Dot{Actor: "x.1", Counter: 1}, Value: []byte(`"v"`), ContentType: "application/json"}}}
	o.Context = storage.Context{}.Join(storage.Context{Dots: []storage.Dot{{Actor: "x.1", Counter: 1}}})
	var frames []byte
	frames = appendFrame(frames, 1, uint16(muxOps[internalApply]), 1, storage.AppendObject(appendKey(nil, k), o))
	frames = appendFrame(frames, 2, 99, 1, nil)
	if _, err := conn.Write(frames); err != nil {
		t.Fatal(err)
	}
	got := map[uint64]int{}
	for range 2 {
		f, err := readFrame(r, muxResponseHeader)
		if err != nil {
			t.Fatal(err)
		}
		got[binary.BigEndian.Uint64(f)] = int(binary.BigEndian.Uint16(f[8:]))
	}
	if got[1] != http.StatusNoContent || got[2] != http.StatusBadRequest {
		t.Fatalf("answers by id: %v, want 1:204 2:400", got)
	}
	if _, err := conn.Write(appendFrame(nil, 3, uint16(muxOps[internalGet]), 1, appendKey(nil, k))); err != nil {
		t.Fatal(err)
	}
	f, err := readFrame(r, muxResponseHeader)
	if err != nil {
		t.Fatal(err)
	}
	if status := binary.BigEndian.Uint16(f[8:]); status != http.StatusOK {
		t.Fatalf("get after apply: %d %s", status, f[muxResponseHeader:])
	}
	back, err := storage.DecodeObject(f[muxResponseHeader:])
	if err != nil || len(back.Siblings) != 1 || string(back.Siblings[0].Value) != `"v"` {
		t.Fatalf("get after apply: %+v, %v", back, err)
	}
	if _, err := conn.Write([]byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadByte(); err == nil {
		t.Fatal("the node kept a connection that sent a malformed frame")
	}
	c.must(http.StatusOK, c.do("n1", "GET", "/v1/kv/b/k", ""))
}

// FuzzReadFrame feeds arbitrary bytes to the frame reader: it never
// panics, and every frame it returns is within the bounds it was given.
func FuzzReadFrame(f *testing.F) {
	f.Add(appendFrame(nil, 1, 2, 1, []byte("body")))
	f.Add(appendFrame(appendFrame(nil, 7, 204, 2, nil), 8, 404, 2, []byte("{}")))
	f.Add([]byte{0, 0, 0, 1, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, header := range []int{muxRequestHeader, muxResponseHeader} {
			r := bufio.NewReader(bytes.NewReader(b))
			read := 0
			for {
				fr, err := readFrame(r, header)
				if err != nil {
					break
				}
				if len(fr) < header || len(fr) > header+maxInternalBody {
					t.Fatalf("frame of %d bytes with header %d", len(fr), header)
				}
				read += 4 + len(fr)
			}
			if read > len(b) {
				t.Fatalf("read %d bytes of %d", read, len(b))
			}
		}
	})
}

// A peer from before multiplexed connections answers the upgrade with 404:
// its calls go as POSTs, and the upgrade is not tried again on every call.
// Nor does it know apply-context: ApplyContext falls back to a plain apply
// and reports that it has no context.
func TestMuxFallsBackToPostsForOlderPeers(t *testing.T) {
	var upgrades, posts atomic.Int32
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case internalMux:
			upgrades.Add(1)
			http.NotFound(w, r)
		case internalGet:
			posts.Add(1)
			w.WriteHeader(http.StatusNotFound)
		case internalApply:
			posts.Add(1)
			w.WriteHeader(http.StatusNoContent)
		case internalApplyC:
			posts.Add(1)
			http.NotFound(w, r)
		default:
			t.Errorf("unexpected %s %s", r.Method, r.URL.Path)
		}
	}))
	defer old.Close()
	addr := strings.TrimPrefix(old.URL, "http://")
	tr := NewHTTPTransport(func(string) (string, bool) { return addr, true }, "n=3", (&net.Dialer{}).DialContext)
	defer tr.Close()
	k := storage.Key{Partition: 1, Bucket: "b", Key: "k"}
	for range 3 {
		if _, err := tr.Get(shortCtx(t, 5*time.Second), "old", k); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("get from an older peer: %v", err)
		}
		if err := tr.Apply(shortCtx(t, 5*time.Second), "old", k, &storage.Object{}); err != nil {
			t.Fatalf("apply to an older peer: %v", err)
		}
		if _, ok, err := tr.ApplyContext(shortCtx(t, 5*time.Second), "old", k, &storage.Object{}); err != nil || ok {
			t.Fatalf("apply-context to an older peer: ok %v, %v; want a plain apply", ok, err)
		}
	}
	if u, p := upgrades.Load(), posts.Load(); u != 1 || p != 12 {
		t.Fatalf("%d upgrades and %d POSTs, want 1 and 12", u, p)
	}
}
