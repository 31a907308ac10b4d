package storage

import (
	"testing"

	"pgregory.net/rapid"
)

func TestContextDescends(t *testing.T) {
	vv := func(es ...Entry) Context { return Context{VV: es} }
	tests := []struct {
		name string
		c, o Context
		want bool
	}{
		{"empty descends empty", Context{}, Context{}, true},
		{"anything descends empty", vv(Entry{"a.1", 2}), Context{}, true},
		{"empty does not descend an event", Context{}, vv(Entry{"a.1", 1}), false},
		{"equal", vv(Entry{"a.1", 2}), vv(Entry{"a.1", 2}), true},
		{"higher counter", vv(Entry{"a.1", 3}), vv(Entry{"a.1", 2}), true},
		{"lower counter", vv(Entry{"a.1", 1}), vv(Entry{"a.1", 2}), false},
		{"other actor missing", vv(Entry{"a.1", 3}), vv(Entry{"a.1", 1}, Entry{"b.1", 1}), false},
		{"dot covered by vector", vv(Entry{"a.1", 3}), Context{Dots: []Dot{{"a.1", 3}}}, true},
		{"dot not covered", vv(Entry{"a.1", 2}), Context{Dots: []Dot{{"a.1", 3}}}, false},
		{"dot covered by dot", Context{Dots: []Dot{{"a.1", 3}}}, Context{Dots: []Dot{{"a.1", 3}}}, true},
		{"vector filled by dots", Context{VV: []Entry{{"a.1", 1}}, Dots: []Dot{{"a.1", 2}, {"a.1", 3}}}, vv(Entry{"a.1", 3}), true},
		{"vector with a gap", Context{VV: []Entry{{"a.1", 1}}, Dots: []Dot{{"a.1", 3}}}, vv(Entry{"a.1", 3}), false},
		{"isolated dot does not cover the vector below it", Context{Dots: []Dot{{"a.1", 3}}}, vv(Entry{"a.1", 3}), false},
	}
	for _, tt := range tests {
		if got := tt.c.Descends(tt.o); got != tt.want {
			t.Errorf("%s: %v.Descends(%v) = %v, want %v", tt.name, tt.c, tt.o, got, tt.want)
		}
	}
}

// Descends is coverage of every event: checked against Covers over the
// whole (small) event universe, and against Join.
func TestContextDescendsIsCoverage(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, b := genContext().Draw(t, "a"), genContext().Draw(t, "b")
		want := true
		for _, act := range actors {
			for n := uint64(1); n <= 7; n++ {
				if b.Covers(Dot{act, n}) && !a.Covers(Dot{act, n}) {
					want = false
				}
			}
		}
		if got := a.Descends(b); got != want {
			t.Fatalf("%v.Descends(%v) = %v, want %v", a, b, got, want)
		}
		if !a.Join(b).Descends(a) || !a.Join(b).Descends(b) || !a.Descends(a) {
			t.Fatalf("a join does not descend its parts, or a context not itself")
		}
	})
}
