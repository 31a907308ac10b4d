package storage

import (
	"bytes"
	"cmp"
	"slices"
)

// A Sibling is one version of a key.
type Sibling struct {
	Dot Dot
	// RequestID is the client's id of the logical write (X-Request-Id),
	// or empty. A write retried through another coordinator gets a second
	// dot: two siblings with one RequestID are one write (see Versions).
	RequestID   string
	Value       []byte
	ContentType string
	// LastModified is the coordinator's wall clock at the write, in Unix
	// nanoseconds. It is shown to users and never orders versions.
	LastModified int64
	Tombstone    bool
}

// Object is everything a replica stores for one key: the sibling versions
// that no write has superseded yet, and the causal context of every write
// the object has seen (which covers every sibling). This is a dotted version
// vector set: siblings are bounded by the number of truly concurrent writers,
// not by the number of actors or clients.
//
// Objects are values: the functions here never modify their arguments.
type Object struct {
	Context  Context
	Siblings []Sibling // sorted by Dot
}

// Live returns the siblings that are not tombstones.
func (o *Object) Live() []Sibling {
	var live []Sibling
	for _, s := range o.Siblings {
		if !s.Tombstone {
			live = append(live, s)
		}
	}
	return live
}

// Versions returns the live siblings with the retries of one write folded
// into one (the one with the smallest dot): what a client sees as the
// object's versions. The object's context covers every dot, so a write
// with it supersedes all of them.
func (o *Object) Versions() []Sibling {
	var out []Sibling
	seen := map[string]bool{}
	for _, s := range o.Live() { // sorted by dot: the smallest comes first
		if s.RequestID != "" {
			if seen[s.RequestID] {
				continue
			}
			seen[s.RequestID] = true
		}
		out = append(out, s)
	}
	return out
}

// retried returns the request ids of o's siblings whose dots ctx covers:
// writes the client saw, whose retries it has seen too.
func (o *Object) retried(ctx Context) map[string]bool {
	ids := map[string]bool{}
	for _, s := range o.Siblings {
		if s.RequestID != "" && ctx.Covers(s.Dot) {
			ids[s.RequestID] = true
		}
	}
	return ids
}

// IsDeleted reports whether every sibling is a tombstone.
func (o *Object) IsDeleted() bool {
	for _, s := range o.Siblings {
		if !s.Tombstone {
			return false
		}
	}
	return true
}

// Merge returns the join of two objects: a sibling survives if both hold it,
// or if the other object has not seen it; a sibling one side has seen but no
// longer holds was superseded there and goes. The contexts are joined.
//
// Merge is total, commutative, associative and idempotent. It is the only
// way versions combine: replica apply, the coordinator's merge of read
// replies, read repair and every background repair call it. A nil object is
// the empty object.
func Merge(a, b *Object) *Object {
	if a == nil {
		a = &Object{}
	}
	if b == nil {
		b = &Object{}
	}
	out := &Object{Context: a.Context.Join(b.Context)}
	i, j := 0, 0
	for i < len(a.Siblings) || j < len(b.Siblings) {
		var c int
		switch {
		case i == len(a.Siblings):
			c = 1
		case j == len(b.Siblings):
			c = -1
		default:
			c = compareDots(a.Siblings[i].Dot, b.Siblings[j].Dot)
		}
		switch {
		case c < 0:
			if !b.Context.Covers(a.Siblings[i].Dot) {
				out.Siblings = append(out.Siblings, a.Siblings[i])
			}
			i++
		case c > 0:
			if !a.Context.Covers(b.Siblings[j].Dot) {
				out.Siblings = append(out.Siblings, b.Siblings[j])
			}
			j++
		default:
			// A dot names one write, so both sides hold the same version.
			// Should corrupt input disagree, pick one deterministically so
			// that the merge laws still hold.
			out.Siblings = append(out.Siblings, minSibling(a.Siblings[i], b.Siblings[j]))
			i++
			j++
		}
	}
	return out
}

// Holds reports whether o already equals m, a merge that included o (read
// repair asks it of every reply). A merge only adds to o's context, and
// with equal contexts it can only drop o's siblings, never add any: so
// equal contexts and equal sibling counts mean equal objects, found
// without encoding either. A nil o holds nothing.
func (o *Object) Holds(m *Object) bool {
	return o != nil && len(o.Siblings) == len(m.Siblings) && o.Context.Equal(m.Context)
}

func minSibling(a, b Sibling) Sibling {
	c := cmp.Or(
		bytes.Compare(a.Value, b.Value),
		cmp.Compare(a.ContentType, b.ContentType),
		cmp.Compare(a.LastModified, b.LastModified),
		cmp.Compare(a.RequestID, b.RequestID),
	)
	if c == 0 && a.Tombstone != b.Tombstone {
		c = -1
		if b.Tombstone {
			c = 1
		}
	}
	if c <= 0 {
		return a
	}
	return b
}

// Update applies a client write to the object a replica holds. The new
// version s gets the dot d, which the replica issued; ctx is the causal
// context the client read. The write supersedes exactly the siblings ctx
// covers, and the retries of those (siblings with their RequestID); all
// others survive as siblings of s.
//
// It returns the new object and the context to hand back to the client: the
// client's context plus the new dot, covering nothing the client has not
// seen.
func Update(o *Object, d Dot, ctx Context, s Sibling) (*Object, Context) {
	if o == nil {
		o = &Object{}
	}
	s.Dot = d
	issuedBefore := o.Context.Max(d.Actor)
	out := &Object{Context: o.Context.Join(ctx).with(d, issuedBefore)}
	seen := o.retried(ctx)
	for _, old := range o.Siblings {
		if !ctx.Covers(old.Dot) && !seen[old.RequestID] {
			out.Siblings = append(out.Siblings, old)
		}
	}
	out.Siblings = append(out.Siblings, s)
	slices.SortFunc(out.Siblings, func(a, b Sibling) int { return compareDots(a.Dot, b.Dot) })
	return out, ctx.with(d, issuedBefore)
}
