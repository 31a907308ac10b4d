package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/quorumkv/quorumkv/antientropy"
	"github.com/quorumkv/quorumkv/ring"
	"github.com/quorumkv/quorumkv/storage"
)

// The node's side of anti-entropy: the store behind ownership checks, the
// cluster view the runner schedules by, the internal route peers call and
// the operator's repair endpoint.

// aaeStore is the store as anti-entropy sees it.
type aaeStore struct {
	*storage.Store
	n *Node
}

// Keeps implements antientropy.Store.
func (s aaeStore) Keeps(p uint32) bool {
	return int(p) < s.n.cfg.Ring.Partitions && s.n.keeps(s.n.placement(), int(p))
}

// Pending implements antientropy.Store: hints for p held here, or a
// transfer of p pending in this node's view.
func (s aaeStore) Pending(p uint32) bool {
	if int(p) >= s.n.cfg.Ring.Partitions {
		return false
	}
	if has, err := s.HasHints(p); err != nil || has {
		return true
	}
	return !settled(s.n.placement(), int(p))
}

// Apply implements antientropy.Store: a repair merges like any replica
// write, and lands as hints if the partition moved away meanwhile.
func (s aaeStore) Apply(p uint32, entries []storage.PartitionEntry) error {
	return s.n.localApplyMany(entries)
}

// settled reports whether partition p has no transfer pending: every write
// target holds it and nobody else does.
func settled(pl *ring.Placement, p int) bool {
	writes := pl.Writes(p)
	for _, node := range writes {
		if !pl.Holds(p, node) {
			return false
		}
	}
	for _, m := range pl.Membership().All() {
		if pl.Holds(p, m.ID) && !pl.IsWriteTarget(p, m.ID) {
			return false
		}
	}
	return true
}

// aaeCluster is the node's view of the cluster, for the runner.
type aaeCluster struct{ n *Node }

func (c aaeCluster) Partitions() []uint32 {
	pl := c.n.placement()
	var out []uint32
	for p := range c.n.cfg.Ring.Partitions {
		if c.n.keeps(pl, p) {
			out = append(out, uint32(p))
		}
	}
	return out
}

func (c aaeCluster) Replicas(p uint32) []string {
	var out []string
	for _, node := range c.n.placement().Writes(int(p)) {
		if node != c.n.cfg.NodeID {
			out = append(out, node)
		}
	}
	return out
}

func (c aaeCluster) Members() []string {
	var out []string
	for _, m := range c.n.placement().Membership().All() {
		if m.ID != c.n.cfg.NodeID && m.State != ring.StateRemoved {
			out = append(out, m.ID)
		}
	}
	return out
}

func (c aaeCluster) Alive(node string) bool { return c.n.alive(node) }
func (c aaeCluster) Settled(p uint32) bool  { return settled(c.n.placement(), int(p)) }
func (c aaeCluster) Busy() bool             { return c.n.inflight.Load() > int64(c.n.cfg.BusyRequests) }
func (c aaeCluster) Call(ctx context.Context, node, op string, body []byte) ([]byte, error) {
	return c.n.transport.AntiEntropy(ctx, node, op, body)
}

// handleInternalAntiEntropy answers a peer's exchange protocol request.
func (n *Node) handleInternalAntiEntropy(ctx context.Context, op string, body []byte) (int, []byte) {
	resp, err := antientropy.Serve(ctx, n.aae.Local(), op, body)
	switch {
	case errors.Is(err, antientropy.ErrBadRequest):
		return internalError(http.StatusBadRequest, "bad_request", err.Error())
	case errors.Is(err, antientropy.ErrNotReplica):
		return internalError(http.StatusConflict, "not_replica", err.Error())
	case err != nil:
		n.log.Warn("anti-entropy request failed", "err", err)
		return internalError(http.StatusInternalServerError, "internal", err.Error())
	}
	return http.StatusOK, resp
}

// RepairResult is the answer of POST /v1/admin/repair.
type RepairResult struct {
	Node string `json:"node"`
	antientropy.Result
	Took  string `json:"took"`
	Error string `json:"error,omitempty"`
}

// handleRepair runs anti-entropy exchanges now: for ?partition=P (repeatable)
// or every partition this node keeps, with every live peer replica. With
// ?rebuild=true the trees are first recomputed from data.
func (n *Node) handleRepair(w http.ResponseWriter, r *http.Request) {
	var parts []uint32
	for _, s := range r.URL.Query()["partition"] {
		p, err := strconv.ParseUint(s, 10, 32)
		if err != nil || int(p) >= n.cfg.Ring.Partitions {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: "bad_request",
				Message: fmt.Sprintf("partition %q must be an integer in [0, %d)", s, n.cfg.Ring.Partitions)})
			return
		}
		parts = append(parts, uint32(p))
	}
	rebuild := false
	if v := r.URL.Query().Get("rebuild"); v != "" {
		var err error
		if rebuild, err = strconv.ParseBool(v); err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: "bad_request", Message: fmt.Sprintf("rebuild %q must be true or false", v)})
			return
		}
	}
	// The repair is owned by the node, so that Close stops it and waits
	// for it before the store closes; the client going away stops it too.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(n.bg, cancel)()
	start := time.Now()
	var res antientropy.Result
	var err error
	done := make(chan struct{})
	if !n.goBackground(func() {
		defer close(done)
		res, err = n.aae.Repair(ctx, parts, rebuild)
	}) {
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "unavailable", Message: "the node is shutting down"})
		return
	}
	<-done
	out := RepairResult{Node: n.cfg.NodeID, Result: res, Took: time.Since(start).Round(time.Millisecond).String()}
	status := http.StatusOK
	switch {
	case errors.Is(err, antientropy.ErrNotReplica):
		status, out.Error = http.StatusConflict, err.Error()
	case err != nil:
		status, out.Error = http.StatusInternalServerError, err.Error()
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(out)
}
