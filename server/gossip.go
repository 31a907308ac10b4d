package server

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/quorumkv/quorumkv/ring"
	"github.com/quorumkv/quorumkv/storage"
)

// Membership and liveness are two different things here, on purpose.
//
// Ring membership (ring.Membership) changes only by an explicit join, leave
// or remove. It is a mergeable table, persisted in the store and spread by
// gossip: memberlist's push-pull carries the whole state, broadcasts carry
// changes. Each node also gossips its holdings (the partitions it holds
// completely); membership and holdings together give the ring.Placement
// every coordinator uses.
//
// Liveness comes from memberlist's failure detector. A crash, pause or
// partition changes only whom the coordinator asks, never the ring.

// gossipState is what this node knows of the cluster, guarded by mu.
type gossip struct {
	n      *Node
	ml     atomic.Pointer[memberlist.Memberlist]
	queue  *memberlist.TransmitLimitedQueue
	meta   []byte // this node's memberlist metadata
	params string
	addr   atomic.Pointer[string] // advertised gossip address (port resolved once bound)

	mu       sync.Mutex
	table    ring.Membership
	holdings ring.Holdings

	placement atomic.Pointer[ring.Placement]
	alive     atomic.Pointer[map[string]bool]
	aliveMu   sync.Mutex // serializes writers of alive
	liveCount atomic.Int32
	changed   chan struct{} // signalled (non-blocking) on every placement change

	aliveChanged chan struct{} // signalled (non-blocking) when a node comes alive
	pushNeeded   chan struct{} // signalled (non-blocking) when state changed
	stopOnce     sync.Once
}

// nodeMeta is carried in memberlist's node metadata: enough to refuse a
// node of another cluster before it joins.
type nodeMeta struct {
	Addr    string `json:"addr"`
	Cluster string `json:"cluster"`
}

// Meta keys in the store.
const (
	metaMembership = "membership"
	metaHoldings   = "holdings"
)

// openGossip loads the persisted membership (or creates it) and builds the
// first placement. It does not start memberlist.
func openGossip(n *Node) (*gossip, error) {
	g := &gossip{n: n, params: n.cluster, changed: make(chan struct{}, 1),
		aliveChanged: make(chan struct{}, 1), pushNeeded: make(chan struct{}, 1)}
	adv := n.cfg.Gossip.advertise()
	g.addr.Store(&adv)
	epoch := n.epoch()
	self := g.selfRecord()

	raw, err := n.store.GetMeta(metaMembership)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		if len(n.cfg.Gossip.Join) == 0 {
			// First node of a new cluster: it holds every (empty) partition.
			self.State = ring.StateMember
			g.table = ring.NewMembership().Set(self)
			g.holdings = ring.Holdings{self.ID: {Epoch: epoch, Version: 1, Parts: ring.FullBitmap(n.cfg.Ring.Partitions)}}
			n.log.Info("creating a new cluster", "cluster", n.cluster)
		} else {
			self.State = ring.StateJoining
			g.table = ring.NewMembership().Set(self)
			g.holdings = ring.Holdings{self.ID: {Epoch: epoch, Version: 1, Parts: ring.NewBitmap(n.cfg.Ring.Partitions)}}
		}
	case err != nil:
		return nil, err
	default:
		if g.table, err = ring.DecodeMembership(raw); err != nil {
			return nil, fmt.Errorf("server: persisted membership: %w", err)
		}
		if raw, err = n.store.GetMeta(metaHoldings); err == nil {
			if g.holdings, err = ring.DecodeHoldings(raw); err != nil {
				return nil, fmt.Errorf("server: persisted holdings: %w", err)
			}
		} else if !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		if g.holdings == nil {
			g.holdings = ring.Holdings{}
		}
		old, _ := g.table.Get(self.ID)
		if old.State == ring.StateRemoved && old.Epoch == epoch {
			return nil, fmt.Errorf("server: node %s was removed from the cluster; wipe its data directory (%s) to join again", self.ID, "--data-dir")
		}
		g.refreshSelf(self)
	}
	if err := g.publishLocked(); err != nil {
		return nil, err
	}
	return g, nil
}

// selfRecord is this node's record as it should be (state left to the
// caller).
func (g *gossip) selfRecord() ring.Member {
	return ring.Member{ID: g.n.cfg.NodeID, Addr: g.n.cfg.Advertise, Gossip: *g.addr.Load(), Epoch: g.n.epoch()}
}

// refreshSelf makes this node's record match its address, gossip address
// and epoch. A new epoch (a wiped directory) rejoins: it holds nothing.
// Callers hold mu or own g exclusively.
func (g *gossip) refreshSelf(self ring.Member) {
	old, ok := g.table.Get(self.ID)
	switch {
	case !ok || old.Epoch != self.Epoch:
		// A new incarnation (new or wiped directory, or an id that was
		// removed and comes back wiped): it rejoins holding nothing, and its
		// record's higher version overrides any tombstone of the old one.
		self.State = ring.StateJoining
		holding := ring.NewBitmap(g.n.cfg.Ring.Partitions)
		if others := slices.DeleteFunc(g.table.RingMembers(), func(id string) bool { return id == self.ID }); len(others) == 0 {
			// Nobody to pull from: it holds every (empty) partition.
			self.State = ring.StateMember
			holding = ring.FullBitmap(g.n.cfg.Ring.Partitions)
		}
		g.table = g.table.Set(self)
		g.setHolding(holding)
	case old.Addr != self.Addr || old.Gossip != self.Gossip:
		self.State = old.State
		g.table = g.table.Set(self)
	}
}

// setHolding replaces this node's holdings. Callers hold mu.
func (g *gossip) setHolding(parts ring.Bitmap) {
	g.holdings = g.holdings.Set(g.n.cfg.NodeID, g.n.epoch(), parts)
}

// publishLocked persists the state and swaps in a new placement. Callers
// hold mu (or own g exclusively).
func (g *gossip) publishLocked() error {
	p, err := ring.NewPlacement(g.n.cfg.Ring, g.table, g.holdings)
	if err != nil {
		return fmt.Errorf("server: placement: %w", err)
	}
	if err := g.n.store.SetMeta(metaMembership, g.table.Encode()); err != nil {
		return err
	}
	if err := g.n.store.SetMeta(metaHoldings, g.holdings.Encode()); err != nil {
		return err
	}
	if f := g.n.cfg.Faults; f != nil {
		for _, m := range g.table.All() {
			f.Register(m.ID, m.Addr, m.Gossip)
		}
	}
	if old := g.placement.Swap(p); old == nil || old.Version() != p.Version() {
		g.n.metrics.memberChanges.Inc()
		select {
		case g.changed <- struct{}{}:
		default:
		}
	}
	return nil
}

// update applies a local change under mu, persists, publishes and
// broadcasts it.
func (g *gossip) update(change func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := change(); err != nil {
		return err
	}
	if err := g.publishLocked(); err != nil {
		return err
	}
	g.broadcastLocked()
	return nil
}

// merge folds remote state into ours; it persists and republishes only when
// something changed.
func (g *gossip) merge(table ring.Membership, holdings ring.Holdings) {
	g.mu.Lock()
	defer g.mu.Unlock()
	t := g.table.Merge(table)
	h := g.holdings.Merge(holdings)
	if t.Equal(g.table) && h.Equal(g.holdings) {
		return
	}
	g.table, g.holdings = t, h
	// Someone may hold an older record of us (we were wiped, or moved).
	self, _ := t.Get(g.n.cfg.NodeID)
	switch {
	case self.Epoch != g.n.epoch():
		g.refreshSelf(g.selfRecord())
	case self.State == ring.StateRemoved:
		// An operator removed this incarnation while it was cut off.
		if g.n.ready.Swap(false) {
			g.n.log.Error("this node was removed from the cluster; it no longer serves requests; wipe its data directory to join again")
		}
	}
	if err := g.publishLocked(); err != nil {
		g.n.log.Error("cannot apply gossiped membership", "err", err)
		return
	}
	g.broadcastLocked()
}

// Gossip wire format: a type byte, then the encoding of that type.
const (
	msgState      = 's' // membership and holdings (push-pull and broadcasts)
	maxGossipSize = 4 << 20
)

func (g *gossip) encodeStateLocked() []byte {
	t, h := g.table.Encode(), g.holdings.Encode()
	b := []byte{msgState}
	b = binary.AppendUvarint(b, uint64(len(g.params)))
	b = append(b, g.params...)
	b = binary.AppendUvarint(b, uint64(len(t)))
	b = append(b, t...)
	return append(b, h...)
}

var errGossip = errors.New("malformed gossip message")

// decodeState parses a state message; it refuses another cluster's.
func decodeState(b []byte, params string) (ring.Membership, ring.Holdings, error) {
	if len(b) == 0 || b[0] != msgState || len(b) > maxGossipSize {
		return ring.Membership{}, nil, errGossip
	}
	b = b[1:]
	field := func() ([]byte, error) {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return nil, errGossip
		}
		f := b[k : k+int(l)]
		b = b[k+int(l):]
		return f, nil
	}
	p, err := field()
	if err != nil {
		return ring.Membership{}, nil, err
	}
	if string(p) != params {
		return ring.Membership{}, nil, fmt.Errorf("cluster parameters mismatch: peer has %q, this node %q", p, params)
	}
	t, err := field()
	if err != nil {
		return ring.Membership{}, nil, err
	}
	table, err := ring.DecodeMembership(t)
	if err != nil {
		return ring.Membership{}, nil, err
	}
	holdings, err := ring.DecodeHoldings(b)
	if err != nil {
		return ring.Membership{}, nil, err
	}
	return table, holdings, nil
}

// stateBroadcast is the whole state; a newer one replaces any queued older
// one.
type stateBroadcast []byte

func (b stateBroadcast) Invalidates(memberlist.Broadcast) bool { return true }
func (b stateBroadcast) Message() []byte                       { return b }
func (b stateBroadcast) Finished()                             {}

func (g *gossip) broadcastLocked() {
	if g.queue == nil {
		return
	}
	if s := g.encodeStateLocked(); len(s) < 1200 {
		g.queue.QueueBroadcast(stateBroadcast(s))
	}
	select {
	case g.pushNeeded <- struct{}{}:
	default:
	}
}

// pushLoop exchanges full state with every live peer soon after a change
// (at most every pushGap), so that changes too large for a broadcast do not
// wait for the push-pull interval. Every push-pull interval it also tries
// to reconnect to members it considers down: after a partition heals, both
// sides may have declared each other dead, and memberlist alone only keeps
// gossiping to the dead for a while.
func (g *gossip) pushLoop() {
	const pushGap = 250 * time.Millisecond
	reconnect := time.NewTicker(g.n.cfg.Gossip.PushPullInterval)
	defer reconnect.Stop()
	for {
		wantAlive := true
		select {
		case <-g.n.bg.Done():
			return
		case <-g.pushNeeded:
		case <-reconnect.C:
			wantAlive = false
		}
		g.exchange(wantAlive)
		select {
		case <-g.n.bg.Done():
			return
		case <-time.After(pushGap):
		}
	}
}

// exchange does a push-pull with every non-removed member that is alive
// (or, with alive false, that is seen as down). Addresses come from the
// member table: memberlist's own Node values are mutated under its lock,
// so they are not read here.
func (g *gossip) exchange(alive bool) {
	g.mu.Lock()
	members := g.table.All()
	g.mu.Unlock()
	ml := g.ml.Load()
	if ml == nil {
		return
	}
	for _, m := range members {
		if m.ID == g.n.cfg.NodeID || m.State == ring.StateRemoved || g.isAlive(m.ID) != alive {
			continue
		}
		if g.n.bg.Err() != nil {
			return
		}
		if _, err := ml.Join([]string{m.ID + "/" + m.Gossip}); err != nil {
			g.n.log.Debug("state exchange failed", "peer", m.ID, "err", err)
		}
	}
}

// --- memberlist.Delegate ---

type delegate struct{ g *gossip }

func (d delegate) NodeMeta(limit int) []byte { return d.g.meta }
func (d delegate) NotifyMsg(b []byte) {
	t, h, err := decodeState(b, d.g.params)
	if err != nil {
		d.g.n.log.Warn("ignoring gossip message", "err", err)
		return
	}
	d.g.merge(t, h)
}
func (d delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.g.queue.GetBroadcasts(overhead, limit)
}
func (d delegate) LocalState(join bool) []byte {
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	return d.g.encodeStateLocked()
}
func (d delegate) MergeRemoteState(b []byte, join bool) {
	d.NotifyMsg(b)
}

// --- memberlist.EventDelegate, AliveDelegate, MergeDelegate ---

// memberlist calls these with its node lock held: they must not call back
// into memberlist.
func (d delegate) NotifyJoin(n *memberlist.Node)   { d.g.setAlive(n.Name, true) }
func (d delegate) NotifyLeave(n *memberlist.Node)  { d.g.setAlive(n.Name, false) }
func (d delegate) NotifyUpdate(n *memberlist.Node) { d.g.setAlive(n.Name, true) }

// NotifyAlive refuses a node of a cluster with other parameters.
func (d delegate) NotifyAlive(peer *memberlist.Node) error { return d.g.checkMeta(peer) }

// NotifyMerge refuses to merge with a cluster with other parameters (this
// is what makes a misconfigured node's join fail, naming the mismatch).
func (d delegate) NotifyMerge(peers []*memberlist.Node) error {
	for _, p := range peers {
		if err := d.g.checkMeta(p); err != nil {
			return err
		}
	}
	return nil
}

func (g *gossip) checkMeta(peer *memberlist.Node) error {
	var m nodeMeta
	if err := json.Unmarshal(peer.Meta, &m); err != nil {
		return fmt.Errorf("node %s: unreadable metadata: %v", peer.Name, err)
	}
	if m.Cluster != g.params {
		return fmt.Errorf("node %s has cluster parameters %s, this node %s: N and the partition count are fixed at cluster creation", peer.Name, m.Cluster, g.params)
	}
	return nil
}

// setAlive records a liveness change. A suspect node stays alive until
// memberlist declares it dead (NotifyLeave).
func (g *gossip) setAlive(node string, up bool) {
	g.aliveMu.Lock()
	defer g.aliveMu.Unlock()
	old := g.alive.Load()
	if old != nil && (*old)[node] == up {
		return
	}
	next := map[string]bool{}
	if old != nil {
		maps.Copy(next, *old)
	}
	if up {
		next[node] = true
	} else {
		delete(next, node)
	}
	g.alive.Store(&next)
	g.liveCount.Store(int32(len(next)))
	if up {
		select {
		case g.aliveChanged <- struct{}{}:
		default:
		}
	}
}

// isAlive reports whether memberlist considers node alive. This node is
// always alive to itself.
func (g *gossip) isAlive(node string) bool {
	if node == g.n.cfg.NodeID {
		return true
	}
	a := g.alive.Load()
	return a != nil && (*a)[node]
}

// memberlistLog turns memberlist's "[LEVEL] memberlist: ..." lines into
// slog records at the matching level.
type memberlistLog struct{ l *slog.Logger }

func (m memberlistLog) Write(b []byte) (int, error) {
	msg := strings.TrimSpace(string(b))
	level := slog.LevelDebug
	for prefix, lv := range map[string]slog.Level{"[ERR]": slog.LevelError, "[WARN]": slog.LevelWarn, "[INFO]": slog.LevelInfo} {
		if rest, ok := strings.CutPrefix(msg, prefix); ok {
			msg, level = strings.TrimSpace(rest), lv
			break
		}
	}
	msg = strings.TrimPrefix(msg, "[DEBUG]")
	m.l.Log(context.Background(), level, strings.TrimSpace(msg))
	return len(b), nil
}

// start starts memberlist and, in the background, joins the seeds.
func (g *gossip) start() error {
	cfg := g.n.cfg.Gossip
	host, port, err := net.SplitHostPort(cfg.BindAddr)
	if err != nil {
		return fmt.Errorf("gossip address %q: %w", cfg.BindAddr, err)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = g.n.cfg.NodeID
	mc.BindAddr = host
	if mc.BindPort, err = strconv.Atoi(port); err != nil {
		return fmt.Errorf("gossip port %q: %w", port, err)
	}
	if ah, ap, err := net.SplitHostPort(cfg.advertise()); err == nil && ap != "0" {
		mc.AdvertiseAddr = ah
		mc.AdvertisePort, _ = strconv.Atoi(ap)
	}
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.GossipInterval = cfg.GossipInterval
	mc.PushPullInterval = cfg.PushPullInterval
	mc.SuspicionMult = cfg.SuspicionMult
	mc.TCPTimeout = cfg.TCPTimeout
	mc.Logger = log.New(memberlistLog{g.n.log.With("component", "memberlist")}, "", 0)
	// A node that restarts on another address may take its name back at
	// once instead of waiting for the dead entry to expire (30 s).
	mc.DeadNodeReclaimTime = cfg.ProbeInterval
	d := delegate{g}
	mc.Delegate, mc.Events, mc.Alive, mc.Merge = d, d, d, d
	g.meta, _ = json.Marshal(nodeMeta{Addr: g.n.cfg.Advertise, Cluster: g.params})
	if cfg.WrapTransport != nil {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{host}, BindPort: mc.BindPort, Logger: mc.Logger,
		})
		if err != nil {
			return fmt.Errorf("gossip transport: %w", err)
		}
		mc.Transport = cfg.WrapTransport(nt)
	}
	g.queue = &memberlist.TransmitLimitedQueue{RetransmitMult: 3, NumNodes: func() int {
		return max(1, int(g.liveCount.Load()))
	}}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("gossip: %w", err)
	}
	g.ml.Store(ml)
	g.setAlive(g.n.cfg.NodeID, true)
	// With port 0 the OS picked the port: advertise the real one.
	local := ml.LocalNode()
	adv := net.JoinHostPort(local.Addr.String(), strconv.Itoa(int(local.Port)))
	if adv != *g.addr.Load() {
		g.addr.Store(&adv)
		if err := g.update(func() error { g.refreshSelf(g.selfRecord()); return nil }); err != nil {
			return err
		}
	}
	g.n.goBackground(g.pushLoop)
	if seeds := g.seeds(); len(seeds) > 0 {
		g.n.goBackground(func() { g.join(seeds) })
	}
	return nil
}

// seeds are the configured join addresses plus the gossip addresses of
// every member this node already knows (a restarted node finds its cluster
// even if its seeds are gone).
func (g *gossip) seeds() []string {
	seen := map[string]bool{}
	var out []string
	add := func(a string) {
		if a != "" && a != *g.addr.Load() && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, a := range g.n.cfg.Gossip.Join {
		add(a)
	}
	g.mu.Lock()
	for _, m := range g.table.All() {
		if m.State != ring.StateRemoved {
			add(m.Gossip)
		}
	}
	g.mu.Unlock()
	return out
}

// join contacts the seeds until one answers, backing off up to
// Gossip.JoinRetryMax. It stops once any peer is alive (another node may
// have reached this one first), and refreshes the seeds from the member
// table on each attempt, since a restarted cluster's addresses change.
func (g *gossip) join(seeds []string) {
	wait := 50 * time.Millisecond
	for {
		if g.liveCount.Load() > 1 {
			return
		}
		n, err := g.ml.Load().Join(seeds)
		if err == nil && n > 0 {
			g.n.log.Info("joined the cluster", "contacted", n)
			return
		}
		g.n.log.Warn("join failed, retrying", "seeds", seeds, "err", err, "retry_in", wait)
		select {
		case <-g.n.bg.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, g.n.cfg.Gossip.JoinRetryMax)
		seeds = g.seeds()
	}
}

// stop leaves memberlist (telling peers quickly) and shuts it down. It is
// idempotent.
func (g *gossip) stop(ctx context.Context) {
	g.stopOnce.Do(func() {
		ml := g.ml.Load()
		if ml == nil {
			return
		}
		timeout := time.Second
		if d, ok := ctx.Deadline(); ok {
			timeout = min(timeout, time.Until(d))
		}
		_ = ml.Leave(timeout)
		_ = ml.Shutdown()
	})
}
