package ring

import (
	"errors"
	"fmt"
	"math"
)

// Sentinel errors. Every error returned by this package wraps exactly one of
// them, so callers can map them (for example to an HTTP status) with errors.Is.
var (
	// ErrInvalidConfig reports a Config that fails Validate, or a partition
	// count too small for the member set.
	ErrInvalidConfig = errors.New("ring: invalid config")
	// ErrInvalidNodeID reports a node id that fails ValidateNodeID.
	ErrInvalidNodeID = errors.New("ring: invalid node id")
	// ErrDuplicateMember reports a member listed twice.
	ErrDuplicateMember = errors.New("ring: duplicate member")
	// ErrNoMembers reports an empty member set.
	ErrNoMembers = errors.New("ring: no members")
	// ErrPlacement reports that consistent could not place every partition
	// under the bounded-load limit (it panics with "not enough room to
	// distribute partitions"; New recovers and returns this instead).
	ErrPlacement = errors.New("ring: cannot place partitions")
	// ErrInvalidMember reports a member record or holding that fails
	// validation (unknown state, overlong field) other than its node id.
	ErrInvalidMember = errors.New("ring: invalid member")
	// ErrNotRingMember reports a leave or remove of a node that is not in the
	// target ring (unknown, already leaving, or removed).
	ErrNotRingMember = errors.New("ring: not a ring member")
	// ErrTooFewMembers reports a leave or remove that would leave fewer ring
	// members than required.
	ErrTooFewMembers = errors.New("ring: too few members")
	// ErrCorrupt reports bytes that DecodeMembership or DecodeHoldings cannot
	// accept: truncated, oversized, non-canonical or invalid.
	ErrCorrupt = errors.New("ring: corrupt encoding")
)

const (
	// minPartitionsPerMember is the smallest number of partitions per member
	// New accepts. Fewer leaves the bounded-load ceiling (computed by
	// consistent from the integer Partitions/members) too coarse to balance
	// anything, and a join could not move a fair share.
	minPartitionsPerMember = 8
	// maxPartitions bounds the table size: New precomputes
	// Partitions × members preference-list entries.
	maxPartitions = 1 << 16
	// maxVirtualNodes bounds the consistent ring (members × VirtualNodes
	// points, each formatted and hashed on every build).
	maxVirtualNodes = 1 << 12
	// maxNodeIDLen is the longest node id ValidateNodeID accepts.
	maxNodeIDLen = 64
)

// Config is the placement configuration. N and Partitions are fixed at
// cluster creation: changing either remaps nearly every key.
type Config struct {
	// Partitions is the number of partitions keys are hashed into, fixed at
	// cluster creation. At least 8 and at most 65536, and New also requires
	// at least 8 per member. Default 1024.
	Partitions int
	// N is the number of replicas (primaries) per partition. A cluster with
	// fewer than N members places min(N, members) replicas. Default 3.
	N int
	// VirtualNodes is the number of points each member gets on the
	// consistent hash ring (consistent's ReplicationFactor; not N). More
	// points give a smoother owner distribution and smaller moves on join,
	// at a build cost linear in members × VirtualNodes. At most 4096. One
	// is accepted but consistent usually cannot place partitions with it
	// (New returns ErrPlacement). Default 200.
	VirtualNodes int
	// Load is the bounded-load factor: no member owns (as first primary)
	// more than ceil(Load × floor(Partitions/members)) partitions. Must be
	// greater than 1. Default 1.05.
	Load float64
}

// DefaultConfig returns the defaults: 1024 partitions, N=3, 200 virtual nodes
// per member, load factor 1.05. With 5 members these keep every member's
// owned share within about 0.9–1.05× the average (see the package doc).
func DefaultConfig() Config {
	return Config{
		Partitions:   1024,
		N:            3,
		VirtualNodes: 200,
		Load:         1.05,
	}
}

// Validate reports whether c is usable on its own. New additionally checks c
// against the member set.
func (c Config) Validate() error {
	switch {
	case c.Partitions < minPartitionsPerMember || c.Partitions > maxPartitions:
		return fmt.Errorf("%w: partitions %d not in [%d, %d]",
			ErrInvalidConfig, c.Partitions, minPartitionsPerMember, maxPartitions)
	case c.N < 1:
		return fmt.Errorf("%w: n %d < 1", ErrInvalidConfig, c.N)
	case c.VirtualNodes < 1 || c.VirtualNodes > maxVirtualNodes:
		return fmt.Errorf("%w: virtual nodes %d not in [1, %d]",
			ErrInvalidConfig, c.VirtualNodes, maxVirtualNodes)
	case !(c.Load > 1) || math.IsInf(c.Load, 1):
		// Load == 1 leaves no slack: consistent panics as soon as the
		// walk meets a full member it cannot skip.
		return fmt.Errorf("%w: load %g must be finite and > 1", ErrInvalidConfig, c.Load)
	}
	return nil
}

// ValidateNodeID reports whether id is a valid node id: 1 to 64 characters
// from [A-Za-z0-9._-]. The set excludes the terminator New appends to names on
// the consistent ring, which is what keeps "node-1" and "node-11" apart.
func ValidateNodeID(id string) error {
	if len(id) == 0 || len(id) > maxNodeIDLen {
		return fmt.Errorf("%w: %q has %d bytes; want 1 to %d characters from [A-Za-z0-9._-]",
			ErrInvalidNodeID, id, len(id), maxNodeIDLen)
	}
	for i := 0; i < len(id); i++ {
		if !idChar(id[i]) {
			return fmt.Errorf("%w: %q has %q at byte %d; want 1 to %d characters from [A-Za-z0-9._-]",
				ErrInvalidNodeID, id, id[i], i, maxNodeIDLen)
		}
	}
	return nil
}

func idChar(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' ||
		b == '.' || b == '_' || b == '-'
}
