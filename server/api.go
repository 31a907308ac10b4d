package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/quorumkv/quorumkv/ring"
	"github.com/quorumkv/quorumkv/storage"
)

// forwardedHeader marks a write that a non-replica forwarded to a replica,
// so that the replica coordinates it rather than forwarding it again.
const forwardedHeader = "X-Quorumkv-Forwarded-By"

// Handler returns the node's HTTP handler: the public API and the internal
// replica API.
func (n *Node) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.GetHead, n.ringVersionHeader)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, errorBody{Error: "not_found", Message: "no route " + r.URL.Path})
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{Error: "method_not_allowed", Message: r.Method + " is not allowed on " + r.URL.Path})
	})
	r.Get("/livez", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", n.handleReady)
	r.Get("/v1/cluster", n.handleCluster)
	r.Handle("/metrics", promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{}))
	r.Get("/v1/kv/{bucket}/*", n.instrument("get", n.handleGet))
	r.Put("/v1/kv/{bucket}/*", n.instrument("put", n.handleWrite))
	r.Delete("/v1/kv/{bucket}/*", n.instrument("delete", n.handleWrite))
	n.internalRoutes(r)
	n.adminRoutes(r)
	if n.cfg.Pprof {
		r.Mount("/debug", middleware.Profiler())
	}
	return r
}

func (n *Node) ringVersionHeader(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Ring-Version", n.placement().Version())
		next.ServeHTTP(w, r)
	})
}

// statusWriter records the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// instrument counts and times a client operation.
func (n *Node) instrument(op string, h http.HandlerFunc) http.HandlerFunc {
	m := n.metrics.forOp(op)
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		n.inflight.Add(1)
		defer n.inflight.Add(-1)
		sw := &statusWriter{ResponseWriter: w}
		h(sw, r)
		m.observe(sw.status, time.Since(start))
	}
}

// fail writes err as a JSON error response.
func (n *Node) fail(w http.ResponseWriter, r *http.Request, op string, err error) {
	status, body := classify(err)
	var q *QuorumError
	if errors.As(err, &q) {
		n.metrics.quorumFailures.WithLabelValues(op).Inc()
	}
	if status >= 500 {
		n.log.Warn("request failed", "op", op, "path", r.URL.Path, "status", status, "err", err)
	}
	writeJSON(w, status, body)
}

func (n *Node) handleReady(w http.ResponseWriter, r *http.Request) {
	if !n.ready.Load() || n.Table() == nil {
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "not_ready", Message: "storage or ring not ready"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// clusterView is the body of GET /v1/cluster.
type clusterView struct {
	Node      string            `json:"node"`
	Addresses map[string]string `json:"addresses"` // node id -> HTTP address
	States    map[string]string `json:"states"`    // node id -> joining, member, leaving, removed
	R         int               `json:"r"`
	W         int               `json:"w"`
	Settled   bool              `json:"settled"` // no partition transfer pending
	// Counting lists, per partition, the replicas that count toward R and
	// W now: the preference list's primaries once transfers settled.
	Counting [][]string `json:"counting"`
	ring.View
}

func (n *Node) handleCluster(w http.ResponseWriter, r *http.Request) {
	pl := n.placement()
	v := clusterView{Node: n.cfg.NodeID, Addresses: map[string]string{}, States: map[string]string{},
		R: n.cfg.R, W: n.cfg.W, Settled: pl.Settled(), View: pl.Target().View()}
	v.View.Version = pl.Version()
	for _, m := range pl.Membership().All() {
		v.Addresses[m.ID] = m.Addr
		v.States[m.ID] = m.State.String()
	}
	for p := range n.cfg.Ring.Partitions {
		v.Counting = append(v.Counting, pl.Counting(p))
	}
	writeJSON(w, http.StatusOK, v)
}

func (n *Node) handleGet(w http.ResponseWriter, r *http.Request) {
	req, err := n.parseKV(r)
	if err != nil {
		n.fail(w, r, "get", err)
		return
	}
	// No deadline context: a read that waits for a replica watches the
	// deadline itself, and one served by this replica alone never waits.
	obj, err := n.read(r.Context(), req.key, req.r, req.sloppy, req.deadline)
	if err != nil {
		n.fail(w, r, "get", err)
		return
	}
	if obj == nil {
		// The empty context: "this read saw nothing". A client that writes
		// back with it makes a write that supersedes nothing, so two
		// clients creating the same key concurrently end with siblings,
		// not one write replacing the other (as two plain PUTs would).
		w.Header().Set("X-Context", storage.EncodeContext(storage.Context{}))
		n.fail(w, r, "get", fmt.Errorf("%w: %s/%q", ErrNotFound, req.key.Bucket, req.key.Key))
		return
	}
	n.metrics.siblings.Observe(float64(len(obj.Versions())))
	n.writeObject(w, obj, obj.Context)
}

// writeObject answers with an object's live siblings: the value itself for
// one, 300 and a JSON list for several, 404 for none. ctx is the context to
// hand back.
func (n *Node) writeObject(w http.ResponseWriter, obj *storage.Object, ctx storage.Context) {
	n.objectHeaders(w, obj, ctx)
	switch live := obj.Versions(); len(live) {
	case 0:
		writeJSON(w, http.StatusNotFound, errorBody{Error: "not_found", Message: "deleted"})
	case 1:
		s := live[0]
		h := w.Header()
		h.Set("Content-Type", s.ContentType)
		h.Set("Last-Modified", time.Unix(0, s.LastModified).UTC().Format(http.TimeFormat))
		h.Set("Content-Length", strconv.Itoa(len(s.Value)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(s.Value)
	default:
		writeJSON(w, http.StatusMultipleChoices, siblingsBody(live))
	}
}

// objectHeaders sets the headers every answer about an object carries.
func (n *Node) objectHeaders(w http.ResponseWriter, obj *storage.Object, ctx storage.Context) {
	w.Header().Set("X-Context", storage.EncodeContext(ctx))
	if len(obj.Siblings) > n.cfg.SiblingWarn {
		w.Header().Set("X-Siblings-Warning", fmt.Sprintf("%d siblings (warning at %d, writes that add one refused past %d): resolve them by writing with the X-Context of a read",
			len(obj.Siblings), n.cfg.SiblingWarn, n.cfg.SiblingLimit))
	}
}

type siblingJSON struct {
	Value        json.RawMessage `json:"value"`
	Encoding     string          `json:"encoding"` // "json" or "base64"
	ContentType  string          `json:"content_type"`
	LastModified string          `json:"last_modified"`
}

// siblingsBody renders siblings for a 300 or a returnbody response: JSON
// values embedded as JSON, anything else as a base64 string.
func siblingsBody(live []storage.Sibling) map[string][]siblingJSON {
	out := make([]siblingJSON, 0, len(live))
	for _, s := range live {
		sj := siblingJSON{ContentType: s.ContentType, LastModified: time.Unix(0, s.LastModified).UTC().Format(time.RFC3339Nano)}
		mt, _, _ := mime.ParseMediaType(s.ContentType)
		if isJSON(mt) && json.Valid(s.Value) {
			var buf bytes.Buffer
			if json.Compact(&buf, s.Value) == nil {
				sj.Value, sj.Encoding = buf.Bytes(), "json"
			}
		}
		if sj.Encoding == "" {
			sj.Value, _ = json.Marshal(base64.StdEncoding.EncodeToString(s.Value))
			sj.Encoding = "base64"
		}
		out = append(out, sj)
	}
	return map[string][]siblingJSON{"siblings": out}
}

// handleWrite serves PUT and DELETE.
func (n *Node) handleWrite(w http.ResponseWriter, r *http.Request) {
	op := "put"
	if r.Method == http.MethodDelete {
		op = "delete"
	}
	req, err := n.parseKV(r)
	if err != nil {
		n.fail(w, r, op, err)
		return
	}
	write := storage.Write{Tombstone: op == "delete", SiblingLimit: n.cfg.SiblingLimit, RequestID: req.requestID}
	if op == "put" {
		if write.Value, write.ContentType, err = n.readBody(w, r); err != nil {
			n.fail(w, r, op, err)
			return
		}
	}
	ctx, cancel := context.WithDeadline(r.Context(), req.deadline)
	defer cancel()

	if !n.placement().IsCounting(int(req.key.Partition), n.cfg.NodeID) {
		// A replica of the key coordinates its writes: it holds the
		// current object, so the sibling limit sees it.
		if from := r.Header.Get(forwardedHeader); from != "" {
			n.fail(w, r, op, fmt.Errorf("%w: %s forwarded a write for %s/%q, but this node is not its replica (ring views disagree)", ErrUnavailable, from, req.key.Bucket, req.key.Key))
			return
		}
		n.forward(ctx, w, r, req.key, write.Value)
		return
	}

	// A plain write (no X-Context) replaces what R replicas hold: see
	// Node.write.
	write.Plain = !req.hasContext
	write.Context = req.context
	write.Now = time.Now()
	written, err := n.write(ctx, req.key, write, req.w, req.r, req.sloppy, req.deadline)
	if err != nil {
		n.fail(w, r, op, err)
		return
	}
	if req.returnBody {
		// The context covers exactly the siblings returned (and what they
		// superseded).
		n.objectHeaders(w, written.Object, written.Object.Context)
		writeJSON(w, http.StatusOK, siblingsBody(written.Object.Versions()))
		return
	}
	n.objectHeaders(w, written.Object, written.Context)
	w.WriteHeader(http.StatusNoContent)
}

// forward sends a write to a primary of its key and relays the answer. It
// tries the next primary only when the previous one could not be reached at
// all (nothing was sent); any later failure leaves the outcome unknown, so
// it answers 503.
func (n *Node) forward(ctx context.Context, w http.ResponseWriter, r *http.Request, k storage.Key, body []byte) {
	op := "put"
	if r.Method == http.MethodDelete {
		op = "delete"
	}
	n.metrics.forwarded.Inc()
	var lastErr error
	for _, node := range n.placement().Counting(int(k.Partition)) {
		addr, ok := n.addr(node)
		if !ok || !n.alive(node) {
			continue
		}
		req, err := http.NewRequestWithContext(ctx, r.Method, "http://"+addr+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			n.fail(w, r, op, err)
			return
		}
		for _, h := range []string{"Content-Type", "X-Context", "X-Request-Id"} {
			if v := r.Header.Get(h); v != "" {
				req.Header.Set(h, v)
			}
		}
		req.Header.Set(forwardedHeader, n.cfg.NodeID)
		resp, err := n.forwarder.Do(req)
		if err != nil {
			lastErr = err
			var op *net.OpError
			if errors.As(err, &op) && op.Op == "dial" {
				continue
			}
			break
		}
		defer resp.Body.Close()
		for _, h := range []string{"Content-Type", "X-Context", "X-Siblings-Warning", "Last-Modified"} {
			if v := resp.Header.Get(h); v != "" {
				w.Header().Set(h, v)
			}
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		return
	}
	n.fail(w, r, op, fmt.Errorf("%w: forwarding to a replica of %s/%q failed, outcome unknown: %v", ErrUnavailable, k.Bucket, k.Key, lastErr))
}
