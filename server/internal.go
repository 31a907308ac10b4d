package server

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/quorumkv/quorumkv/ring"
	"github.com/quorumkv/quorumkv/storage"
)

// The internal API: what nodes ask each other. Every operation is a
// function from a request body to a status and a response body, so that
// the same handler answers over plain HTTP (a POST to its path) and over a
// multiplexed connection (see mux.go), which carries the small, frequent
// replica calls of the request path.

// internalHandler answers one internal request. Errors are a 4xx or 5xx
// status with a JSON errorBody.
type internalHandler func(ctx context.Context, body []byte) (status int, resp []byte)

// internalError is the reply of a failed internal request.
func internalError(status int, code, msg string) (int, []byte) {
	b, _ := json.Marshal(errorBody{Error: code, Message: msg})
	return status, b
}

// internalFailure is internalError for an error classified by classify.
func internalFailure(err error) (int, []byte) {
	status, eb := classify(err)
	b, _ := json.Marshal(eb)
	return status, b
}

// internalRoutes mounts the internal API on r.
func (n *Node) internalRoutes(r chi.Router) {
	for path, h := range n.muxHandlers() {
		r.Post(path, n.internal(h))
	}
	r.Post(internalBatch, n.internal(n.handleInternalBatch))
	r.Post(internalStream, n.internal(n.handleInternalStream))
	r.Post(internalAAE+"{op}", func(w http.ResponseWriter, r *http.Request) {
		op := chi.URLParam(r, "op")
		n.internal(func(ctx context.Context, body []byte) (int, []byte) {
			return n.handleInternalAntiEntropy(ctx, op, body)
		})(w, r)
	})
	r.Post(internalMux, n.handleMux)
}

// muxHandlers are the internal operations that multiplexed connections
// carry, by path: the replica calls of client requests. Bulk transfers
// (stream, apply-batch, anti-entropy) stay on plain HTTP, so a large batch
// never queues in front of them.
func (n *Node) muxHandlers() map[string]internalHandler {
	return map[string]internalHandler{
		internalGet:    n.handleInternalGet,
		internalApply:  n.handleInternalApply,
		internalApplyC: n.handleInternalApplyContext,
		internalHint:   n.handleInternalHint,
		internalHolds:  n.handleInternalHolds,
	}
}

// checkCluster refuses a call from a node of a cluster with different
// parameters, and reports whether it did.
func (n *Node) checkCluster(w http.ResponseWriter, r *http.Request) bool {
	if got := r.Header.Get(clusterHeader); got != n.cluster {
		writeJSON(w, http.StatusConflict, errorBody{Error: "cluster_mismatch",
			Message: fmt.Sprintf("caller's cluster parameters %q differ from this node's %q", got, n.cluster)})
		return false
	}
	return true
}

// internal serves h over HTTP: it accepts only calls from a node of a
// cluster with the same parameters.
func (n *Node) internal(h internalHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !n.checkCluster(w, r) {
			return
		}
		if r.Header.Get("Content-Type") != objectType {
			writeJSON(w, http.StatusUnsupportedMediaType, errorBody{Error: "bad_request", Message: "internal API takes " + objectType})
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxInternalBody))
		if err != nil {
			writeJSON(w, http.StatusRequestEntityTooLarge, errorBody{Error: "too_large", Message: err.Error()})
			return
		}
		status, resp := h(r.Context(), body)
		if status >= 400 {
			w.Header().Set("Content-Type", "application/json")
		} else if len(resp) > 0 {
			w.Header().Set("Content-Type", objectType)
		}
		w.WriteHeader(status)
		_, _ = w.Write(resp)
	}
}

func (n *Node) handleInternalGet(_ context.Context, body []byte) (int, []byte) {
	k, rest, err := decodeKey(body)
	if err != nil || len(rest) != 0 {
		return internalError(http.StatusBadRequest, "bad_request", "malformed key")
	}
	o, err := n.localGet(k)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return http.StatusNotFound, nil // common: keep it cheap
	case err != nil:
		return internalFailure(err)
	}
	return http.StatusOK, storage.EncodeObject(o)
}

func (n *Node) handleInternalApply(_ context.Context, body []byte) (int, []byte) {
	k, o, err := n.decodeKeyedObject(body)
	if err != nil {
		return internalError(http.StatusBadRequest, "bad_request", err.Error())
	}
	if _, err := n.localApply(k, o); err != nil {
		return internalFailure(err)
	}
	return http.StatusNoContent, nil
}

// handleInternalApplyContext is handleInternalApply answering with the
// context of the merged object (200), or with 204 if the object went to
// hints because this node no longer keeps the key.
func (n *Node) handleInternalApplyContext(_ context.Context, body []byte) (int, []byte) {
	k, o, err := n.decodeKeyedObject(body)
	if err != nil {
		return internalError(http.StatusBadRequest, "bad_request", err.Error())
	}
	merged, err := n.localApply(k, o)
	if err != nil {
		return internalFailure(err)
	}
	if merged == nil {
		return http.StatusNoContent, nil
	}
	return http.StatusOK, []byte(storage.EncodeContext(merged.Context))
}

// validKey reports whether k is a valid key that hashes to its stated
// partition.
func (n *Node) validKey(k storage.Key) bool {
	return validateBucket(k.Bucket) == nil && len(k.Key) > 0 && len(k.Key) <= MaxKeyLen &&
		int(k.Partition) == n.Table().Partition(k.Bucket, k.Key)
}

// decodeKeyedObject parses a key and an object, checking that the key is
// valid and hashes to its stated partition.
func (n *Node) decodeKeyedObject(body []byte) (storage.Key, *storage.Object, error) {
	k, rest, err := decodeKey(body)
	if err != nil {
		return k, nil, err
	}
	if !n.validKey(k) {
		return k, nil, errors.New("key does not belong to its partition or is invalid")
	}
	o, err := storage.DecodeObjectFrom(rest) // body is this request's own
	return k, o, err
}

func (n *Node) handleInternalBatch(_ context.Context, body []byte) (int, []byte) {
	batch, err := decodeStreamBatch(body)
	if err == nil {
		for _, e := range batch.Entries {
			if !n.validKey(e.Key) {
				err = errors.New("a key does not belong to its partition or is invalid")
				break
			}
		}
	}
	if err != nil {
		return internalError(http.StatusBadRequest, "bad_request", err.Error())
	}
	if err := n.localApplyMany(batch.Entries); err != nil {
		return internalFailure(err)
	}
	return http.StatusNoContent, nil
}

func (n *Node) handleInternalHolds(_ context.Context, body []byte) (int, []byte) {
	p, k := binary.Uvarint(body)
	if k <= 0 || k != len(body) || p >= uint64(n.cfg.Ring.Partitions) {
		return internalError(http.StatusBadRequest, "bad_request", "malformed partition")
	}
	// "Yes" promises to keep it: this node holds p and, in its own view,
	// is one of p's target primaries, so it will not drop p itself. Two
	// nodes with different views of a ring change therefore cannot both
	// drop a partition on the strength of each other's answer.
	answer := "0"
	mu := &n.partLocks[p]
	mu.RLock()
	if pl := n.placement(); pl.Holds(int(p), n.cfg.NodeID) && pl.Target().IsPrimary(int(p), n.cfg.NodeID) {
		answer = "1"
	}
	mu.RUnlock()
	return http.StatusOK, []byte(answer)
}

func (n *Node) handleInternalHint(_ context.Context, body []byte) (int, []byte) {
	l, m := binary.Uvarint(body)
	if m <= 0 || l > uint64(len(body)-m) {
		return internalError(http.StatusBadRequest, "bad_request", "malformed owner")
	}
	owner := string(body[m : m+int(l)])
	k, o, err := n.decodeKeyedObject(body[m+int(l):])
	if err != nil || ring.ValidateNodeID(owner) != nil {
		return internalError(http.StatusBadRequest, "bad_request", fmt.Sprintf("malformed hint: %v", err))
	}
	if err := n.store.PutHint(owner, k, o, storage.HintDurable, time.Now()); err != nil {
		if errors.Is(err, storage.ErrHintsFull) {
			n.metrics.hints.WithLabelValues("refused").Inc()
			return internalError(http.StatusInsufficientStorage, "hints_full", err.Error())
		}
		return internalFailure(err)
	}
	n.metrics.hints.WithLabelValues("stored").Inc()
	return http.StatusNoContent, nil
}

func (n *Node) handleInternalStream(_ context.Context, body []byte) (int, []byte) {
	p, k1 := binary.Uvarint(body)
	maxBytes, k2 := 0, 0
	if k1 > 0 {
		var v uint64
		v, k2 = binary.Uvarint(body[k1:])
		maxBytes = int(min(v, 64<<20))
	}
	if k1 <= 0 || k2 <= 0 || p >= uint64(n.cfg.Ring.Partitions) {
		return internalError(http.StatusBadRequest, "bad_request", "malformed stream request")
	}
	entries, next, done, err := n.store.ReadPartition(uint32(p), body[k1+k2:], max(maxBytes, 1))
	if err != nil {
		return internalFailure(err)
	}
	return http.StatusOK, appendStreamBatch(nil, StreamBatch{Entries: entries, Next: next, Done: done})
}
