package storage

import (
	"fmt"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

var actors = []string{"a.1", "a.2", "b.1", "c.1"} // sorted

// genObject draws an arbitrary well-formed object: siblings from a small dot
// universe (so draws overlap), content fixed by the dot (a dot names one
// write), and a context that covers every sibling.
func genObject() *rapid.Generator[*Object] {
	return rapid.Custom(func(t *rapid.T) *Object {
		o := &Object{Context: genContext().Draw(t, "ctx")}
		dots := rapid.SliceOfNDistinct(genDot(), 0, 4, func(d Dot) Dot { return d }).Draw(t, "dots")
		slices.SortFunc(dots, compareDots)
		for _, d := range dots {
			o.Siblings = append(o.Siblings, sibling(d))
		}
		o.Context = o.Context.Join(Context{Dots: dots})
		return o
	})
}

func genDot() *rapid.Generator[Dot] {
	return rapid.Custom(func(t *rapid.T) Dot {
		return Dot{rapid.SampledFrom(actors).Draw(t, "actor"), rapid.Uint64Range(1, 6).Draw(t, "n")}
	})
}

func genContext() *rapid.Generator[Context] {
	return rapid.Custom(func(t *rapid.T) Context {
		var c Context
		for _, a := range actors {
			if n := rapid.Uint64Range(0, 5).Draw(t, a); n > 0 {
				c.VV = append(c.VV, Entry{a, n})
			}
		}
		return c.Join(Context{Dots: rapid.SliceOfN(genDot(), 0, 3).Draw(t, "dots")})
	})
}

func sibling(d Dot) Sibling {
	s := Sibling{Dot: d, Value: fmt.Appendf(nil, `"%s/%d"`, d.Actor, d.Counter), ContentType: "application/json", LastModified: int64(d.Counter)}
	if d.Counter > 4 { // counters 5 and 6 of any actor: retries of two writes
		s.RequestID = fmt.Sprintf("req-%d", d.Counter)
	}
	return s
}

func equalObjects(a, b *Object) bool {
	return string(EncodeObject(a)) == string(EncodeObject(b))
}

// Holds answers for a merge exactly what comparing encodings answers.
func TestHoldsIsEqualityAfterMerge(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, b := genObject().Draw(t, "a"), genObject().Draw(t, "b")
		m := Merge(a, b)
		if got, want := a.Holds(m), equalObjects(a, m); got != want {
			t.Fatalf("Holds = %v, equal encodings = %v\na %+v\nm %+v", got, want, a, m)
		}
	})
	if (*Object)(nil).Holds(&Object{}) {
		t.Fatal("a nil object holds something")
	}
}

func TestMergeLaws(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, b, c := genObject().Draw(t, "a"), genObject().Draw(t, "b"), genObject().Draw(t, "c")
		if !equalObjects(Merge(a, b), Merge(b, a)) {
			t.Fatalf("not commutative:\n%+v\n%+v", Merge(a, b), Merge(b, a))
		}
		if !equalObjects(Merge(Merge(a, b), c), Merge(a, Merge(b, c))) {
			t.Fatalf("not associative")
		}
		if !equalObjects(Merge(a, a), a) {
			t.Fatalf("not idempotent: %+v -> %+v", a, Merge(a, a))
		}
		if !equalObjects(Merge(a, nil), a) || !equalObjects(Merge(nil, a), a) {
			t.Fatalf("nil is not the identity")
		}
		// Merging never loses a sibling that the other side has not seen.
		m := Merge(a, b)
		for _, s := range a.Siblings {
			if !b.Context.Covers(s.Dot) && !slices.ContainsFunc(m.Siblings, func(x Sibling) bool { return x.Dot == s.Dot }) {
				t.Fatalf("lost unseen sibling %v", s.Dot)
			}
		}
	})
}

// A write carrying a read's context supersedes exactly the siblings that read
// saw (and the retries of those: siblings with their request id), and the
// context it returns covers only the new version and the request's own
// context.
func TestUpdateSupersedesExactlyWhatWasRead(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		replica := genObject().Draw(t, "replica")
		read := genObject().Draw(t, "read") // what the client's read returned
		ctx := read.Context
		actor := rapid.SampledFrom(actors).Draw(t, "actor")
		d := Dot{actor, max(replica.Context.Max(actor), ctx.Max(actor)) + 1}
		obj, ret := Update(replica, d, ctx, Sibling{Value: []byte(`"new"`)})

		for _, s := range replica.Siblings {
			kept := slices.ContainsFunc(obj.Siblings, func(x Sibling) bool { return x.Dot == s.Dot })
			seen := ctx.Covers(s.Dot) || s.RequestID != "" && slices.ContainsFunc(replica.Siblings, func(x Sibling) bool {
				return x.RequestID == s.RequestID && ctx.Covers(x.Dot)
			})
			if kept == seen {
				t.Fatalf("sibling %v: kept=%v but seen=%v", s.Dot, kept, seen)
			}
		}
		if !slices.ContainsFunc(obj.Siblings, func(x Sibling) bool { return x.Dot == d }) {
			t.Fatalf("new version missing")
		}
		if !obj.Context.Covers(d) || !ret.Covers(d) {
			t.Fatalf("new dot not covered")
		}
		// The returned context covers the request's context and the new dot,
		// and none of the replica's other versions it did not cover.
		for _, s := range replica.Siblings {
			if ret.Covers(s.Dot) != ctx.Covers(s.Dot) {
				t.Fatalf("returned context changed coverage of %v", s.Dot)
			}
		}
		for _, e := range ctx.VV {
			for n := uint64(1); n <= e.Counter; n++ {
				if !ret.Covers(Dot{e.Actor, n}) {
					t.Fatalf("returned context lost %s:%d", e.Actor, n)
				}
			}
		}
		// Writing again with the returned context supersedes the new version
		// and keeps every sibling the first write kept.
		d2 := Dot{actor, d.Counter + 1}
		obj2, _ := Update(obj, d2, ret, Sibling{Value: []byte(`"newer"`)})
		for _, s := range obj.Siblings {
			kept := slices.ContainsFunc(obj2.Siblings, func(x Sibling) bool { return x.Dot == s.Dot })
			if s.Dot == d && kept || s.Dot != d && !kept {
				t.Fatalf("second write: sibling %v kept=%v", s.Dot, kept)
			}
		}
	})
}

func TestContextJoinIsUnion(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, b := genContext().Draw(t, "a"), genContext().Draw(t, "b")
		j := a.Join(b)
		for _, act := range actors {
			for n := uint64(1); n <= 7; n++ {
				d := Dot{act, n}
				if j.Covers(d) != (a.Covers(d) || b.Covers(d)) {
					t.Fatalf("join coverage of %v wrong", d)
				}
			}
		}
		if !j.Equal(b.Join(a)) || !j.Equal(j.Join(a)) {
			t.Fatalf("join not commutative or idempotent")
		}
	})
}

func TestEncodingRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		o := genObject().Draw(t, "o")
		if rapid.Bool().Draw(t, "tomb") && len(o.Siblings) > 0 {
			o.Siblings[0].Tombstone = true
			o.Siblings[0].Value = nil
		}
		got, err := DecodeObject(EncodeObject(o))
		if err != nil {
			t.Fatal(err)
		}
		if !equalObjects(got, o) {
			t.Fatalf("round trip changed object:\n%+v\n%+v", o, got)
		}
		c, err := DecodeContext(EncodeContext(o.Context))
		if err != nil {
			t.Fatal(err)
		}
		if !c.Equal(o.Context) {
			t.Fatalf("context round trip: %+v != %+v", c, o.Context)
		}
	})
}

func TestDecodeRejectsGarbage(t *testing.T) {
	good := EncodeObject(&Object{Context: Context{VV: []Entry{{"a.1", 1}}}, Siblings: []Sibling{sibling(Dot{"a.1", 1})}})
	for name, b := range map[string][]byte{
		"empty":     nil,
		"version":   append([]byte{9}, good[1:]...),
		"truncated": good[:len(good)-1],
		"trailing":  append(slices.Clone(good), 0),
	} {
		if _, err := DecodeObject(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	tok := EncodeContext(Context{VV: []Entry{{"a.1", 3}}})
	for _, bad := range []string{"!!", "AAAA", tok[:len(tok)-1] + "A", tok + "A"} {
		if _, err := DecodeContext(bad); err == nil {
			t.Errorf("context %q decoded", bad)
		}
	}
}

// Two writers that each carry the context their own previous write
// returned end with exactly two siblings (riak_test's sibling_explosion).
func TestNoSiblingExplosion(t *testing.T) {
	var obj *Object
	var ctxs [2]Context
	for i := range 100 {
		w := i % 2
		var err error
		d := Dot{"a.1", uint64(i + 1)}
		obj, ctxs[w] = Update(obj, d, ctxs[w], Sibling{Value: fmt.Appendf(nil, "%d", i)})
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := len(obj.Siblings); n != 2 {
		t.Fatalf("got %d siblings, want 2", n)
	}
}

// Versions folds the retries of one write (siblings with one request id)
// into the one with the smallest dot.
func TestVersionsFoldRetries(t *testing.T) {
	a5, c5, b2 := sibling(Dot{"a.1", 5}), sibling(Dot{"c.1", 5}), sibling(Dot{"b.1", 2})
	o := Merge(&Object{Context: Context{Dots: []Dot{a5.Dot}}, Siblings: []Sibling{a5}},
		&Object{Context: Context{Dots: []Dot{c5.Dot, b2.Dot}}, Siblings: []Sibling{b2, c5}})
	if len(o.Siblings) != 3 {
		t.Fatalf("merge kept %d siblings, want all 3 dots", len(o.Siblings))
	}
	got := o.Versions()
	if len(got) != 2 || got[0].Dot != a5.Dot || got[1].Dot != b2.Dot {
		t.Fatalf("versions %+v, want a.1:5 (for req-5) and b.1:2", got)
	}
	// A write that saw the retry c.1:5 supersedes its first attempt too.
	obj, _ := Update(o, Dot{"b.1", 3}, Context{Dots: []Dot{c5.Dot}}, Sibling{Value: []byte(`"x"`)})
	if v := obj.Versions(); len(v) != 2 || v[0].Dot != b2.Dot || v[1].Dot != (Dot{"b.1", 3}) {
		t.Fatalf("after a write that saw the retry: %+v", v)
	}
}
