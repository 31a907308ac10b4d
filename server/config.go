package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/quorumkv/quorumkv/antientropy"
	"github.com/quorumkv/quorumkv/ring"
	"github.com/quorumkv/quorumkv/server/faultnet"
	"github.com/quorumkv/quorumkv/storage"
)

// Config configures a node. Zero fields take the defaults of DefaultConfig.
type Config struct {
	// NodeID names this node. Required.
	NodeID string
	// Advertise is the HTTP address (host:port) other nodes and clients use
	// to reach this node. Required.
	Advertise string
	// Gossip configures membership gossip and failure detection.
	Gossip GossipConfig
	// Ring holds N and the partition count, fixed at cluster creation, and
	// the placement tuning. Default ring.DefaultConfig() (N=3, 1024
	// partitions).
	Ring ring.Config
	// R and W are the default read and write quorums. Default 2 and 2.
	R, W int
	// Timeout is the default deadline of a client request, including every
	// replica call it makes. Default 3s. Requests may ask for less or more
	// (up to MaxTimeout) with ?timeout=.
	Timeout time.Duration
	// MaxTimeout caps ?timeout=. Default 60s.
	MaxTimeout time.Duration
	// ReplicaTimeout bounds one replica call within a request. A primary
	// that does not answer within it is replaced by a fallback (sloppy
	// quorum). Default 1s (and never beyond the request's deadline).
	ReplicaTimeout time.Duration
	// ReadRepairChance is the share of reads that ask every counting
	// replica rather than R of them, so that read repair also reaches the
	// replicas a read did not need (Cassandra's read_repair_chance). Hinted
	// handoff and anti-entropy repair the rest. 0 to 1; DefaultConfig sets
	// 0.1, and 0 (the zero Config) means never.
	ReadRepairChance float64
	// MaxBody is the largest value accepted, in bytes. Default 1 MiB.
	MaxBody int64
	// SiblingWarn is the sibling count past which responses carry an
	// X-Siblings-Warning header. Default 25.
	SiblingWarn int
	// SiblingLimit is the sibling count past which a client write that
	// would add a sibling is refused with 409. Replica apply and repairs
	// never refuse. Default 100.
	SiblingLimit int
	// Handoff configures hint delivery and partition transfers.
	Handoff HandoffConfig
	// AntiEntropy configures background exchanges, tree rebuilds and
	// tombstone purging. Zero fields take antientropy.DefaultConfig's
	// defaults. Its TombstoneGrace must exceed Handoff.Hints.MaxSlowAge.
	AntiEntropy antientropy.Config
	// PauseAntiEntropy stops scheduled anti-entropy (POST /v1/admin/repair
	// still runs it). For tests that must see other repair paths alone.
	PauseAntiEntropy bool
	// BusyRequests is the number of client requests in flight above which
	// background repair (anti-entropy) waits before its next exchange.
	// Default 32.
	BusyRequests int
	// Pprof serves Go's profiler at /debug/pprof/ on the HTTP port, for
	// finding what costs under load. Default off: profiles reveal internals
	// and cost CPU while taken.
	Pprof bool
	// Dial, if set, opens node-to-node connections (tests inject faults
	// here). Default: a net.Dialer with a 2s timeout.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Faults, if set, routes this node's HTTP and gossip traffic through a
	// fault-injecting network and serves POST /v1/debug/partition and
	// /v1/debug/heal, so that process-level tests can cut links between
	// real processes. Never set in production. Default nil.
	Faults *faultnet.Network
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
}

// GossipConfig configures memberlist. The intervals trade detection speed
// against gossip traffic; the defaults suit a LAN.
type GossipConfig struct {
	// BindAddr is the host:port memberlist listens on (UDP and TCP).
	// Required.
	BindAddr string
	// Advertise is the gossip address peers use. Default BindAddr.
	Advertise string
	// Join lists gossip addresses of existing members. Empty for the first
	// node of a new cluster. A node that already belongs to a cluster also
	// contacts the members it knows.
	Join []string
	// ProbeInterval is how often a random peer is probed. Default 1s.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a probe waits for an ack. Default 500ms.
	ProbeTimeout time.Duration
	// GossipInterval is how often broadcasts are gossiped. Default 200ms.
	GossipInterval time.Duration
	// PushPullInterval is how often full state is exchanged with a random
	// peer. Default 15s.
	PushPullInterval time.Duration
	// SuspicionMult scales how long a suspect node has to refute before it
	// is declared dead. Default 4.
	SuspicionMult int
	// TCPTimeout bounds memberlist's TCP exchanges. Default 5s.
	TCPTimeout time.Duration
	// JoinRetryMax caps the backoff between join attempts. Default 5s.
	JoinRetryMax time.Duration
	// WrapTransport, if set, wraps memberlist's network transport (tests
	// inject faults here).
	WrapTransport func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport
}

func (g GossipConfig) advertise() string {
	if g.Advertise != "" {
		return g.Advertise
	}
	return g.BindAddr
}

// HandoffConfig configures hinted handoff delivery and ownership transfers.
// Both are background work, rate-limited so that they never starve client
// requests.
type HandoffConfig struct {
	// Interval is how often the hint and transfer loops look for work.
	// Default 1s.
	Interval time.Duration
	// HintRate caps hint deliveries per second. Default 2000.
	HintRate int
	// HintBatch is how many hints one delivery pass reads at a time.
	// Default 256.
	HintBatch int
	// TransferRate caps partition transfer bytes per second. Default 16 MiB.
	TransferRate int64
	// TransferBatch is the size of one transfer batch in bytes. Default
	// 256 KiB.
	TransferBatch int
	// Hints bounds the hint store. Durable hints (they counted toward W)
	// are never dropped: past MaxDurable/MaxDurableBytes this node refuses
	// new ones and coordinators try the next fallback. Slow hints (for
	// replicas merely slower than W) past MaxSlow/MaxSlowBytes/MaxSlowAge are
	// dropped and counted, left to anti-entropy. Default
	// storage.DefaultHintConfig().
	Hints storage.HintConfig
	// PauseHints stops hint delivery (hints are still stored). For tests
	// that must see read repair or anti-entropy work alone.
	PauseHints bool
	// PauseTransfers stops partition pulls and drops. For tests that must
	// see anti-entropy refill a replica alone.
	PauseTransfers bool
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Gossip: GossipConfig{
			ProbeInterval:    time.Second,
			ProbeTimeout:     500 * time.Millisecond,
			GossipInterval:   200 * time.Millisecond,
			PushPullInterval: 15 * time.Second,
			SuspicionMult:    4,
			TCPTimeout:       5 * time.Second,
			JoinRetryMax:     5 * time.Second,
		},
		Ring:             ring.DefaultConfig(),
		R:                2,
		W:                2,
		Timeout:          3 * time.Second,
		MaxTimeout:       60 * time.Second,
		ReplicaTimeout:   time.Second,
		ReadRepairChance: 0.1,
		MaxBody:          1 << 20,
		SiblingWarn:      25,
		SiblingLimit:     100,
		BusyRequests:     32,
		AntiEntropy:      antientropy.DefaultConfig(),
		Handoff: HandoffConfig{
			Interval:      time.Second,
			HintRate:      2000,
			HintBatch:     256,
			TransferRate:  16 << 20,
			TransferBatch: 256 << 10,
		},
		Logger: slog.Default(),
	}
}

// FastTiming shortens failure detection, gossip and background intervals
// for tests that run a cluster on one machine: a node is declared dead 0.6
// to 3.6 s after a probe of it fails (memberlist's suspicion timeout, the
// shorter end once another node confirms), instead of 4 to 24 s. Not for
// production networks.
//
// The probe timeout still allows for a machine that runs several race-
// instrumented nodes and other test packages on two slow cores: with 50 ms
// and a suspicion multiplier of 2, live nodes there were declared dead
// hundreds of times a minute, and transfers waited on "dead" sources.
func (c *Config) FastTiming() {
	c.ReplicaTimeout = 500 * time.Millisecond
	c.Gossip.ProbeInterval = 200 * time.Millisecond
	c.Gossip.ProbeTimeout = 150 * time.Millisecond
	c.Gossip.GossipInterval = 30 * time.Millisecond
	c.Gossip.PushPullInterval = 500 * time.Millisecond
	// 3: a suspect waits for one other node to confirm it, or for up to
	// six times the base suspicion timeout, before it is declared dead.
	c.Gossip.SuspicionMult = 3
	c.Gossip.TCPTimeout = time.Second
	c.Gossip.JoinRetryMax = 200 * time.Millisecond
	c.Handoff.Interval = 50 * time.Millisecond
	c.AntiEntropy.Interval = 500 * time.Millisecond
	c.AntiEntropy.ExchangeRate = 1000
	c.AntiEntropy.CallTimeout = 2 * time.Second
	c.AntiEntropy.BusyWait = 100 * time.Millisecond
}

func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Ring == (ring.Config{}) {
		c.Ring = d.Ring
	}
	orDefault(&c.R, d.R)
	orDefault(&c.W, d.W)
	orDefault(&c.Timeout, d.Timeout)
	orDefault(&c.MaxTimeout, d.MaxTimeout)
	orDefault(&c.ReplicaTimeout, d.ReplicaTimeout)
	orDefault(&c.MaxBody, d.MaxBody)
	orDefault(&c.SiblingWarn, d.SiblingWarn)
	orDefault(&c.SiblingLimit, d.SiblingLimit)
	orDefault(&c.BusyRequests, d.BusyRequests)
	orDefault(&c.AntiEntropy.TombstoneGrace, d.AntiEntropy.TombstoneGrace)
	orDefault(&c.Handoff.Hints.MaxSlowAge, storage.DefaultHintConfig().MaxSlowAge)
	orDefault(&c.Logger, d.Logger)
	g, dg := &c.Gossip, d.Gossip
	orDefault(&g.ProbeInterval, dg.ProbeInterval)
	orDefault(&g.ProbeTimeout, dg.ProbeTimeout)
	orDefault(&g.GossipInterval, dg.GossipInterval)
	orDefault(&g.PushPullInterval, dg.PushPullInterval)
	orDefault(&g.SuspicionMult, dg.SuspicionMult)
	orDefault(&g.TCPTimeout, dg.TCPTimeout)
	orDefault(&g.JoinRetryMax, dg.JoinRetryMax)
	h, dh := &c.Handoff, d.Handoff
	orDefault(&h.Interval, dh.Interval)
	orDefault(&h.HintRate, dh.HintRate)
	orDefault(&h.HintBatch, dh.HintBatch)
	orDefault(&h.TransferRate, dh.TransferRate)
	orDefault(&h.TransferBatch, dh.TransferBatch)
	return c
}

// Validate rejects configurations that cannot work.
func (c Config) Validate() error {
	var errs []error
	if err := ring.ValidateNodeID(c.NodeID); err != nil {
		errs = append(errs, err)
	}
	if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
		errs = append(errs, fmt.Errorf("advertised HTTP address %q: %v", c.Advertise, err))
	}
	if _, _, err := net.SplitHostPort(c.Gossip.BindAddr); err != nil {
		errs = append(errs, fmt.Errorf("gossip address %q: %v", c.Gossip.BindAddr, err))
	}
	if err := c.Ring.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.R < 1 || c.R > c.Ring.N {
		errs = append(errs, fmt.Errorf("r=%d must be within 1..n=%d", c.R, c.Ring.N))
	}
	if c.W < 1 || c.W > c.Ring.N {
		errs = append(errs, fmt.Errorf("w=%d must be within 1..n=%d", c.W, c.Ring.N))
	}
	if !(c.ReadRepairChance >= 0 && c.ReadRepairChance <= 1) {
		errs = append(errs, fmt.Errorf("read repair chance %v must be within 0..1", c.ReadRepairChance))
	}
	if c.Timeout <= 0 || c.MaxTimeout < c.Timeout {
		errs = append(errs, fmt.Errorf("timeout %v must be positive and at most max timeout %v", c.Timeout, c.MaxTimeout))
	}
	if c.ReplicaTimeout <= 0 {
		errs = append(errs, fmt.Errorf("replica timeout %v must be positive", c.ReplicaTimeout))
	}
	if c.MaxBody <= 0 {
		errs = append(errs, fmt.Errorf("max body %d must be positive", c.MaxBody))
	}
	if c.SiblingWarn < 1 || c.SiblingLimit < c.SiblingWarn {
		errs = append(errs, fmt.Errorf("sibling warning %d must be positive and at most the limit %d", c.SiblingWarn, c.SiblingLimit))
	}
	if g, age := c.AntiEntropy.TombstoneGrace, c.Handoff.Hints.MaxSlowAge; g <= age {
		errs = append(errs, fmt.Errorf("tombstone grace %v must exceed the longest a hint is kept (%v), or a late hint could bring deleted data back", g, age))
	}
	if c.Handoff.HintRate < 1 || c.Handoff.TransferRate < 1 || c.Handoff.HintBatch < 1 || c.Handoff.TransferBatch < 1 {
		errs = append(errs, errors.New("handoff rates and batch sizes must be positive"))
	}
	return errors.Join(errs...)
}
