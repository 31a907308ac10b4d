package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/quorumkv/quorumkv/ring"
)

// downFor is how long an address whose connection failed is tried only
// after every other candidate.
const downFor = 2 * time.Second

// minTriggerGap spaces refreshes triggered by X-Ring-Version: while gossip
// converges, nodes report different versions for a moment, and the client
// must not refresh on every answer.
const minTriggerGap = 100 * time.Millisecond

// table is the key-aware routing state: a node's GET /v1/cluster.
type table struct {
	version    string
	partitions int
	n          int
	settled    bool
	addrs      map[string]string // node id -> host:port
	counting   [][]string        // per partition: node ids that count toward R and W now
	nodes      []string          // addresses of every node that is not removed, sorted
}

// clusterView is the part of GET /v1/cluster the client reads.
type clusterView struct {
	Node            string            `json:"node"`
	Addresses       map[string]string `json:"addresses"`
	States          map[string]string `json:"states"`
	Settled         bool              `json:"settled"`
	Counting        [][]string        `json:"counting"`
	Version         string            `json:"ring_version"`
	N               int               `json:"n"`
	Partitions      int               `json:"partitions"`
	PreferenceLists [][]string        `json:"preference_lists"`
}

// parseTable decodes and checks a GET /v1/cluster body.
func parseTable(body []byte) (*table, error) {
	var v clusterView
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, fmt.Errorf("decoding /v1/cluster: %w", err)
	}
	switch {
	case v.Version == "":
		return nil, errors.New("/v1/cluster: no ring_version")
	case v.Partitions <= 0 || v.Partitions > 1<<20:
		return nil, fmt.Errorf("/v1/cluster: partitions %d", v.Partitions)
	case len(v.Counting) != v.Partitions:
		return nil, fmt.Errorf("/v1/cluster: %d counting lists for %d partitions", len(v.Counting), v.Partitions)
	}
	t := &table{version: v.Version, partitions: v.Partitions, n: v.N, settled: v.Settled,
		addrs: v.Addresses, counting: v.Counting}
	if t.addrs == nil {
		t.addrs = map[string]string{}
	}
	for id, addr := range v.Addresses {
		if addr != "" && v.States[id] != "removed" {
			t.nodes = append(t.nodes, addr)
		}
	}
	slices.Sort(t.nodes)
	return t, nil
}

// replicaAddrs returns the addresses of the key's counting replicas, in
// the table's order.
func (t *table) replicaAddrs(bucket, key string) []string {
	p := ring.PartitionOf(t.partitions, bucket, key)
	out := make([]string, 0, len(t.counting[p]))
	for _, id := range t.counting[p] {
		if a := t.addrs[id]; a != "" {
			out = append(out, a)
		}
	}
	return out
}

// health remembers addresses whose connections failed recently.
type health struct {
	mu   sync.Mutex
	down map[string]time.Time // address -> until
}

func (h *health) markDown(addr string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down == nil {
		h.down = map[string]time.Time{}
	}
	h.down[addr] = time.Now().Add(downFor)
}

// order returns addrs with the healthy ones first, each group in its
// original order.
func (h *health) order(addrs []string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.down) == 0 {
		return addrs
	}
	now := time.Now()
	out := make([]string, 0, len(addrs))
	var later []string
	for _, a := range addrs {
		if until, ok := h.down[a]; ok {
			if now.Before(until) {
				later = append(later, a)
				continue
			}
			delete(h.down, a)
		}
		out = append(out, a)
	}
	return append(out, later...)
}

// rotate returns a copy of s rotated left by k.
func rotate(s []string, k uint64) []string {
	if len(s) == 0 {
		return nil
	}
	i := int(k % uint64(len(s)))
	return append(slices.Clone(s[i:]), s[:i]...)
}

// candidates returns the addresses the attempts of an operation on
// bucket/key go to, in order: attempt i goes to candidates[i % len]. Key-
// aware: the key's counting replicas (rotated, so that load spreads over
// them), then every other known node and endpoint. Round-robin: the
// endpoints, rotated. Addresses whose connection failed recently come last.
func (c *Client) candidates(bucket, key string) []string {
	k := c.rr.Add(1)
	t := c.table.Load()
	if c.cfg.routing != KeyAware || t == nil {
		return c.health.order(rotate(c.endpoints, k))
	}
	primary := rotate(t.replicaAddrs(bucket, key), k)
	var rest []string
	for _, list := range [][]string{t.nodes, c.endpoints} {
		for _, a := range list {
			if !slices.Contains(primary, a) && !slices.Contains(rest, a) {
				rest = append(rest, a)
			}
		}
	}
	// Healthy replicas, healthy fallbacks, then the replicas and fallbacks
	// that are down.
	return c.health.order(append(primary, rotate(rest, k)...))
}

// noteVersion asks for a refresh when a node answered with another ring
// version than the table's.
func (c *Client) noteVersion(addr, version string) {
	if c.cfg.routing != KeyAware || version == "" {
		return
	}
	if t := c.table.Load(); t != nil && t.version == version {
		return
	}
	select {
	case c.trigger <- addr:
	default: // a refresh is already pending
	}
}

// refresher refreshes the table every refresh interval and when asked.
func (c *Client) refresher() {
	defer c.wg.Done()
	tick := time.NewTicker(c.cfg.refreshInterval)
	defer tick.Stop()
	var lastTriggered time.Time
	for {
		prefer := ""
		select {
		case <-c.ctx.Done():
			return
		case <-tick.C:
		case prefer = <-c.trigger:
			if wait := minTriggerGap - time.Since(lastTriggered); wait > 0 {
				timer := time.NewTimer(wait)
				select {
				case <-c.ctx.Done():
					timer.Stop()
					return
				case <-timer.C:
				}
			}
			lastTriggered = time.Now()
		}
		if err := c.refresh(c.ctx, prefer); err != nil && c.ctx.Err() == nil {
			c.log().Warn("quorumkv: refreshing the partition table failed", "err", err)
		}
	}
}

// refresh loads the table from prefer (the node that reported a new
// version), else the first endpoint or known node that answers.
func (c *Client) refresh(ctx context.Context, prefer string) error {
	var addrs []string
	if prefer != "" {
		addrs = append(addrs, prefer)
	}
	lists := [][]string{c.endpoints}
	if t := c.table.Load(); t != nil {
		lists = append(lists, rotate(t.nodes, c.rr.Add(1)))
	}
	for _, list := range lists {
		for _, a := range list {
			if !slices.Contains(addrs, a) {
				addrs = append(addrs, a)
			}
		}
	}
	var errs []error
	for _, a := range c.health.order(addrs) {
		t, err := c.fetchTable(ctx, a)
		if err == nil {
			c.setTable(t, a)
			return nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

func (c *Client) setTable(t *table, from string) {
	old := c.table.Swap(t)
	if old == nil || old.version != t.version {
		c.log().Info("quorumkv: partition table loaded", "ring_version", t.version, "from", from,
			"partitions", t.partitions, "nodes", len(t.nodes), "settled", t.settled)
	}
}

// fetchTable asks one node for its GET /v1/cluster.
func (c *Client) fetchTable(ctx context.Context, addr string) (*table, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.attemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.scheme+"://"+addr+"/v1/cluster", nil)
	if err != nil {
		return nil, err
	}
	c.setAuth(req)
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			c.health.markDown(addr)
		}
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %w", addr, decodeError(resp.StatusCode, body))
	}
	t, err := parseTable(body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	return t, nil
}
