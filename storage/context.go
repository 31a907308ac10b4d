package storage

import (
	"cmp"
	"slices"
)

// A Dot names one write event: the Counter-th write that Actor issued.
// Actors are replica incarnations (node id plus epoch), so a dot is never
// issued twice.
type Dot struct {
	Actor   string
	Counter uint64
}

func compareDots(a, b Dot) int {
	if c := cmp.Compare(a.Actor, b.Actor); c != 0 {
		return c
	}
	return cmp.Compare(a.Counter, b.Counter)
}

// An Entry is one actor's component of a version vector.
type Entry struct {
	Actor   string
	Counter uint64
}

// Context is a causal context: the set of write events that a reader or an
// object has seen. It is a version vector (all events of Actor up to Counter)
// plus isolated dots that the vector does not cover. The isolated dots let a
// PUT return a context that covers its own new version and the request's
// context, nothing else: folding the new dot into the vector would also cover
// concurrent versions of the same actor that the caller never saw.
//
// A Context is a value: operations return new contexts and never modify their
// receivers. The zero Context is empty. Its slices are kept sorted and
// normalized (no isolated dot covered by the vector, no zero counters), so
// equal contexts encode to equal bytes.
type Context struct {
	VV   []Entry // sorted by Actor, counters > 0
	Dots []Dot   // sorted, each not covered by VV
}

// Max returns the highest counter of actor that the context covers.
func (c Context) Max(actor string) uint64 {
	m := c.vvMax(actor)
	for _, d := range c.Dots {
		if d.Actor == actor {
			m = max(m, d.Counter)
		}
	}
	return m
}

// vvMax returns actor's counter in the vector part.
func (c Context) vvMax(actor string) uint64 {
	i, ok := slices.BinarySearchFunc(c.VV, actor, func(e Entry, a string) int { return cmp.Compare(e.Actor, a) })
	if !ok {
		return 0
	}
	return c.VV[i].Counter
}

// Covers reports whether the context has seen the event d.
func (c Context) Covers(d Dot) bool {
	if d.Counter <= c.vvMax(d.Actor) {
		return true
	}
	_, ok := slices.BinarySearchFunc(c.Dots, d, compareDots)
	return ok
}

// IsEmpty reports whether the context covers nothing.
func (c Context) IsEmpty() bool { return len(c.VV) == 0 && len(c.Dots) == 0 }

// Join returns the union of two contexts: it covers exactly the events that
// either covers.
func (c Context) Join(o Context) Context {
	vv := make([]Entry, 0, max(len(c.VV), len(o.VV)))
	i, j := 0, 0
	for i < len(c.VV) || j < len(o.VV) {
		switch {
		case j == len(o.VV) || (i < len(c.VV) && c.VV[i].Actor < o.VV[j].Actor):
			vv = append(vv, c.VV[i])
			i++
		case i == len(c.VV) || o.VV[j].Actor < c.VV[i].Actor:
			vv = append(vv, o.VV[j])
			j++
		default:
			vv = append(vv, Entry{c.VV[i].Actor, max(c.VV[i].Counter, o.VV[j].Counter)})
			i++
			j++
		}
	}
	out := Context{VV: vv}
	if len(c.Dots)+len(o.Dots) > 0 {
		dots := make([]Dot, 0, len(c.Dots)+len(o.Dots))
		dots = append(append(dots, c.Dots...), o.Dots...)
		slices.SortFunc(dots, compareDots)
		dots = slices.Compact(dots)
		for _, d := range dots {
			if d.Counter > out.vvMax(d.Actor) {
				out.Dots = append(out.Dots, d)
			}
		}
	}
	return out
}

// with returns c plus the single event d. When c already covers every event
// of d's actor that precedes d (issuedBefore is the highest counter the actor
// had issued on this key before d), d extends the vector; otherwise it is kept
// as an isolated dot so that the context does not cover events it never saw.
func (c Context) with(d Dot, issuedBefore uint64) Context {
	if c.Covers(d) {
		return c
	}
	if c.vvMax(d.Actor) >= issuedBefore {
		return c.Join(Context{VV: []Entry{{d.Actor, d.Counter}}})
	}
	return c.Join(Context{Dots: []Dot{d}})
}

// normalize sorts and cleans a context built from untrusted parts: duplicate
// actors keep their highest counter, zero counters and covered dots go.
func (c Context) normalize() Context {
	vv := slices.DeleteFunc(slices.Clone(c.VV), func(e Entry) bool { return e.Counter == 0 })
	slices.SortFunc(vv, func(a, b Entry) int {
		// Highest counter first within an actor, so Compact keeps it.
		return cmp.Or(cmp.Compare(a.Actor, b.Actor), cmp.Compare(b.Counter, a.Counter))
	})
	vv = slices.CompactFunc(vv, func(a, b Entry) bool { return a.Actor == b.Actor })
	out := Context{VV: vv}
	return out.Join(Context{Dots: slices.DeleteFunc(slices.Clone(c.Dots), func(d Dot) bool { return d.Counter == 0 })})
}

// Equal reports whether two contexts cover the same events.
func (c Context) Equal(o Context) bool {
	return slices.Equal(c.VV, o.VV) && slices.Equal(c.Dots, o.Dots)
}

// Descends reports whether c covers every event that o covers (c ⊇ o). A
// read whose context descends a write's context saw that write, or a write
// that superseded it.
func (c Context) Descends(o Context) bool {
	for _, e := range o.VV {
		m := c.vvMax(e.Actor)
		if m >= e.Counter {
			continue
		}
		// The events m+1..e.Counter must all be isolated dots of c. Dots
		// are sorted, distinct and above m, so counting them suffices.
		n := uint64(0)
		for _, d := range c.Dots {
			if d.Actor == e.Actor && d.Counter <= e.Counter {
				n++
			}
		}
		if n != e.Counter-m {
			return false
		}
	}
	for _, d := range o.Dots {
		if !c.Covers(d) {
			return false
		}
	}
	return true
}
