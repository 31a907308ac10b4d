package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/quorumkv/quorumkv/antientropy"
	"github.com/quorumkv/quorumkv/ring"
)

// Admin API: the operator's view of the cluster and the explicit membership
// changes (leave, remove). Membership never changes any other way.

func (n *Node) adminRoutes(r chi.Router) {
	r.Get("/v1/admin/node", n.handleNodeStatus)
	r.Get("/v1/admin/status", n.handleClusterStatus)
	r.Post("/v1/admin/leave", n.handleLeave)
	r.Post("/v1/admin/remove/{node}", n.handleRemove)
	r.Post("/v1/admin/repair", n.handleRepair)
	if f := n.cfg.Faults; f != nil {
		// Test seam: cut or heal this node's links (its own side only; a
		// test cuts both sides of a link by asking both nodes).
		r.Post("/v1/debug/partition", func(w http.ResponseWriter, r *http.Request) {
			for _, peer := range r.URL.Query()["peer"] {
				f.Partition(n.cfg.NodeID, peer)
			}
			w.WriteHeader(http.StatusNoContent)
		})
		r.Post("/v1/debug/heal", func(w http.ResponseWriter, r *http.Request) {
			f.Heal()
			w.WriteHeader(http.StatusNoContent)
		})
	}
}

// NodeStatus is one node's own account of its background work.
type NodeStatus struct {
	Node         string            `json:"node"`
	State        string            `json:"state"`
	PendingHints int64             `json:"pending_hints"` // durable + slow
	HintsByOwner map[string]int    `json:"hints_by_owner"`
	Transfers    int               `json:"transfers"` // partitions still to receive
	Holds        int               `json:"holds"`     // partitions held completely
	RingVersion  string            `json:"ring_version"`
	AntiEntropy  AntiEntropyStatus `json:"anti_entropy"`
}

// AntiEntropyStatus is a node's anti-entropy progress: when it last
// completed a scheduled round, and its totals since it started.
type AntiEntropyStatus struct {
	// LastRound is when the node last completed a scheduled round in which
	// every partition it keeps was compared with a peer without error; nil
	// if never since it started. POST /v1/admin/repair does not count.
	LastRound *time.Time `json:"last_round"`
	antientropy.Stats
}

func (n *Node) nodeStatus() (NodeStatus, error) {
	pl := n.placement()
	self, _ := pl.Membership().Get(n.cfg.NodeID)
	owners, err := n.store.HintOwners()
	if err != nil {
		return NodeStatus{}, err
	}
	st := n.store.HintStats()
	aae := AntiEntropyStatus{Stats: n.aae.Stats()}
	if t := n.aae.LastRound(); !t.IsZero() {
		t = t.UTC()
		aae.LastRound = &t
	}
	return NodeStatus{
		Node:         n.cfg.NodeID,
		State:        self.State.String(),
		PendingHints: st.Durable + st.Slow,
		HintsByOwner: owners,
		Transfers:    len(pl.Pulls(n.cfg.NodeID)),
		Holds:        pl.Holdings()[n.cfg.NodeID].Parts.Count(),
		RingVersion:  pl.Version(),
		AntiEntropy:  aae,
	}, nil
}

func (n *Node) handleNodeStatus(w http.ResponseWriter, r *http.Request) {
	st, err := n.nodeStatus()
	if err != nil {
		n.fail(w, r, "admin", err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// MemberStatus is one row of `quorumkv cluster status`.
type MemberStatus struct {
	Node         string  `json:"node"`
	State        string  `json:"state"`
	Alive        bool    `json:"alive"`
	Address      string  `json:"address"`
	Ownership    float64 `json:"ownership"` // share of primary replica slots in the target ring
	PendingHints *int64  `json:"pending_hints"`
	Transfers    int     `json:"transfers"`
	RingVersion  string  `json:"ring_version,omitempty"` // as the node itself reports it
	// LastRound is when the node last completed a scheduled anti-entropy
	// round, as it reports itself; absent if never, or if it was not asked.
	LastRound *time.Time `json:"last_repair_round,omitempty"`
	Error     string     `json:"error,omitempty"`
}

// ClusterStatus is this node's view of every member, with each live
// member's own counts.
type ClusterStatus struct {
	Node        string         `json:"node"`
	RingVersion string         `json:"ring_version"`
	Settled     bool           `json:"settled"`
	Partitions  int            `json:"partitions"`
	Members     []MemberStatus `json:"members"`
}

func (n *Node) handleClusterStatus(w http.ResponseWriter, r *http.Request) {
	pl := n.placement()
	own := pl.Target().Ownership()
	out := ClusterStatus{Node: n.cfg.NodeID, RingVersion: pl.Version(), Settled: pl.Settled(), Partitions: n.cfg.Ring.Partitions}
	members := pl.Membership().All()
	out.Members = make([]MemberStatus, len(members))
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i, m := range members {
		ms := MemberStatus{Node: m.ID, State: m.State.String(), Alive: n.alive(m.ID) && m.State != ring.StateRemoved,
			Address: m.Addr, Ownership: own[m.ID], Transfers: len(pl.Pulls(m.ID))}
		out.Members[i] = ms
		if !ms.Alive {
			continue
		}
		wg.Go(func() {
			st, err := n.peerStatus(ctx, m.ID)
			if err != nil {
				out.Members[i].Error = err.Error()
				return
			}
			out.Members[i].PendingHints = &st.PendingHints
			out.Members[i].RingVersion = st.RingVersion
			out.Members[i].LastRound = st.AntiEntropy.LastRound
		})
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, out)
}

func (n *Node) peerStatus(ctx context.Context, node string) (NodeStatus, error) {
	if node == n.cfg.NodeID {
		return n.nodeStatus()
	}
	addr, ok := n.addr(node)
	if !ok {
		return NodeStatus{}, fmt.Errorf("no address for %s", node)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/admin/node", nil)
	if err != nil {
		return NodeStatus{}, err
	}
	resp, err := n.forwarder.Do(req)
	if err != nil {
		return NodeStatus{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// Not a status: zero counts would pass for real ones.
		var e errorBody
		if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e) == nil && e.Message != "" {
			return NodeStatus{}, fmt.Errorf("%s answered %d %s: %s", node, resp.StatusCode, e.Error, e.Message)
		}
		return NodeStatus{}, fmt.Errorf("%s answered %s", node, resp.Status)
	}
	var st NodeStatus
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return NodeStatus{}, err
	}
	return st, nil
}

// errRefused is a membership change the cluster cannot take.
var errRefused = errors.New("membership change refused")

func (n *Node) handleLeave(w http.ResponseWriter, r *http.Request) {
	id := n.cfg.NodeID
	err := n.gossip.update(func() error {
		self, _ := n.gossip.table.Get(id)
		if self.State == ring.StateLeaving {
			return nil
		}
		if err := n.gossip.table.CheckLeaveOrRemove(id, n.cfg.Ring.N); err != nil {
			return fmt.Errorf("%w: %v", errRefused, err)
		}
		self.State = ring.StateLeaving
		n.gossip.table = n.gossip.table.Set(self)
		return nil
	})
	if err != nil {
		n.failAdmin(w, r, err)
		return
	}
	n.log.Info("leaving the cluster: handing partitions over")
	writeJSON(w, http.StatusAccepted, map[string]string{"node": id, "state": "leaving"})
}

func (n *Node) handleRemove(w http.ResponseWriter, r *http.Request) {
	target := chi.URLParam(r, "node")
	err := n.gossip.update(func() error {
		m, ok := n.gossip.table.Get(target)
		if !ok {
			return fmt.Errorf("%w: no member %q", ErrNotFound, target)
		}
		if m.State == ring.StateRemoved {
			return nil
		}
		if n.alive(target) {
			return fmt.Errorf("%w: %s is alive; a live node leaves with `quorumkv cluster leave` on it", errRefused, target)
		}
		if err := n.gossip.table.CheckLeaveOrRemove(target, n.cfg.Ring.N); err != nil {
			return fmt.Errorf("%w: %v", errRefused, err)
		}
		m.State = ring.StateRemoved
		n.gossip.table = n.gossip.table.Set(m)
		return nil
	})
	if err != nil {
		n.failAdmin(w, r, err)
		return
	}
	n.log.Info("removed a dead member: its partitions are re-replicated from the survivors", "removed", target)
	writeJSON(w, http.StatusOK, map[string]string{"node": target, "state": "removed"})
}

func (n *Node) failAdmin(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, errRefused) {
		writeJSON(w, http.StatusConflict, errorBody{Error: "refused", Message: err.Error()})
		return
	}
	n.fail(w, r, "admin", err)
}
