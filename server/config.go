package server

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/quorumkv/quorumkv/ring"
)

// Config configures a node. Zero fields take the defaults of DefaultConfig.
type Config struct {
	// NodeID names this node. It must be one of Peers. Required.
	NodeID string
	// Peers maps every member's node id to its HTTP address (host:port),
	// this node included. A static member list. Required.
	Peers map[string]string
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
	// MaxBody is the largest value accepted, in bytes. Default 1 MiB.
	MaxBody int64
	// SiblingWarn is the sibling count past which responses carry an
	// X-Siblings-Warning header. Default 25.
	SiblingWarn int
	// SiblingLimit is the sibling count past which a client write that
	// would add a sibling is refused with 409. Replica apply and repairs
	// never refuse. Default 100.
	SiblingLimit int
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Ring:         ring.DefaultConfig(),
		R:            2,
		W:            2,
		Timeout:      3 * time.Second,
		MaxTimeout:   60 * time.Second,
		MaxBody:      1 << 20,
		SiblingWarn:  25,
		SiblingLimit: 100,
		Logger:       slog.Default(),
	}
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Ring == (ring.Config{}) {
		c.Ring = d.Ring
	}
	if c.R == 0 {
		c.R = d.R
	}
	if c.W == 0 {
		c.W = d.W
	}
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	if c.MaxTimeout == 0 {
		c.MaxTimeout = d.MaxTimeout
	}
	if c.MaxBody == 0 {
		c.MaxBody = d.MaxBody
	}
	if c.SiblingWarn == 0 {
		c.SiblingWarn = d.SiblingWarn
	}
	if c.SiblingLimit == 0 {
		c.SiblingLimit = d.SiblingLimit
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	return c
}

// Validate rejects configurations that cannot work.
func (c Config) Validate() error {
	var errs []error
	if err := ring.ValidateNodeID(c.NodeID); err != nil {
		errs = append(errs, err)
	}
	if _, ok := c.Peers[c.NodeID]; !ok {
		errs = append(errs, fmt.Errorf("peers must include this node %q", c.NodeID))
	}
	if err := c.Ring.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(c.Peers) < c.Ring.N {
		errs = append(errs, fmt.Errorf("n=%d needs at least %d members, have %d", c.Ring.N, c.Ring.N, len(c.Peers)))
	}
	if c.R < 1 || c.R > c.Ring.N {
		errs = append(errs, fmt.Errorf("r=%d must be within 1..n=%d", c.R, c.Ring.N))
	}
	if c.W < 1 || c.W > c.Ring.N {
		errs = append(errs, fmt.Errorf("w=%d must be within 1..n=%d", c.W, c.Ring.N))
	}
	if c.Timeout <= 0 || c.MaxTimeout < c.Timeout {
		errs = append(errs, fmt.Errorf("timeout %v must be positive and at most max timeout %v", c.Timeout, c.MaxTimeout))
	}
	if c.MaxBody <= 0 {
		errs = append(errs, fmt.Errorf("max body %d must be positive", c.MaxBody))
	}
	if c.SiblingWarn < 1 || c.SiblingLimit < c.SiblingWarn {
		errs = append(errs, fmt.Errorf("sibling warning %d must be positive and at most the limit %d", c.SiblingWarn, c.SiblingLimit))
	}
	return errors.Join(errs...)
}
