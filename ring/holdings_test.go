package ring

import (
	"bytes"
	"errors"
	"maps"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

func TestBitmap(t *testing.T) {
	for _, n := range []int{0, 1, 63, 64, 65, 1024, 1000} {
		e, f := NewBitmap(n), FullBitmap(n)
		if e.Len() != n || f.Len() != n || e.Count() != 0 || f.Count() != n {
			t.Fatalf("n=%d: len %d/%d count %d/%d", n, e.Len(), f.Len(), e.Count(), f.Count())
		}
		if e.Has(-1) || e.Has(n) || f.Has(-1) || f.Has(n) {
			t.Fatalf("n=%d: Has out of range", n)
		}
		if n == 0 {
			if !e.Equal(f) || !e.Equal(Bitmap{}) {
				t.Fatal("empty bitmaps differ")
			}
			continue
		}
		b := e.With(n - 1).With(0)
		if !b.Has(0) || !b.Has(n-1) || b.Count() != min(n, 2) || e.Count() != 0 {
			t.Fatalf("n=%d: With: %v", n, b)
		}
		if b.Without(0).Without(n-1).Equal(e) != true {
			t.Fatalf("n=%d: Without does not undo With", n)
		}
		g := f
		for p := range n {
			g = g.Without(p)
		}
		if !g.Equal(e) || f.Count() != n {
			t.Fatalf("n=%d: clearing a full bitmap bit by bit", n)
		}
	}
	if NewBitmap(64).Equal(NewBitmap(65)) {
		t.Error("bitmaps of different lengths are equal")
	}
	defer func() {
		if recover() == nil {
			t.Error("With out of range did not panic")
		}
	}()
	NewBitmap(8).With(8)
}

func genBitmap(n int) *rapid.Generator[Bitmap] {
	return rapid.Custom(func(t *rapid.T) Bitmap {
		b := NewBitmap(n)
		for _, p := range rapid.SliceOfN(rapid.IntRange(0, max(n-1, 0)), 0, 6).Draw(t, "parts") {
			if n > 0 {
				b = b.With(p)
			}
		}
		return b
	})
}

func genHoldings() *rapid.Generator[Holdings] {
	return rapid.Custom(func(t *rapid.T) Holdings {
		h := Holdings{}
		for range rapid.IntRange(0, 5).Draw(t, "nodes") {
			id := rapid.SampledFrom([]string{"n1", "n2", "n3", "n11"}).Draw(t, "id")
			h[id] = Holding{
				Epoch:   rapid.SampledFrom([]string{"", "e1", "e2"}).Draw(t, "epoch"),
				Version: rapid.Uint64Range(0, 2).Draw(t, "version"),
				Parts:   genBitmap(rapid.SampledFrom([]int{0, 8, 70}).Draw(t, "partitions")).Draw(t, "parts"),
			}
		}
		return h
	})
}

func TestHoldingsMergeLaws(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, b, c := genHoldings().Draw(t, "a"), genHoldings().Draw(t, "b"), genHoldings().Draw(t, "c")
		ac, bc := maps.Clone(a), maps.Clone(b)
		ab := a.Merge(b)
		if !maps.EqualFunc(a, ac, holdingEq) || !maps.EqualFunc(b, bc, holdingEq) {
			t.Fatal("Merge modified an input")
		}
		if !ab.Equal(b.Merge(a)) {
			t.Fatal("not commutative")
		}
		if !ab.Merge(c).Equal(a.Merge(b.Merge(c))) {
			t.Fatal("not associative")
		}
		if !a.Merge(a).Equal(a) {
			t.Fatal("not idempotent")
		}
		for id, hd := range ab {
			for _, side := range []Holdings{a, b} {
				if o, ok := side[id]; ok && o.Version > hd.Version {
					t.Fatalf("%s: merged version %d below input %d", id, hd.Version, o.Version)
				}
			}
		}
		if !bytes.Equal(ab.Encode(), b.Merge(a).Encode()) {
			t.Fatal("encodings of equal holdings differ")
		}
	})
}

func holdingEq(a, b Holding) bool { return compareHoldings(a, b) == 0 }

func TestHoldingsMerge(t *testing.T) {
	x, y := NewBitmap(8).With(1), NewBitmap(8).With(2)
	h := Holdings{"n1": {Epoch: "e1", Version: 3, Parts: x}}
	for _, tc := range []struct {
		name  string
		other Holding
		want  Holding
	}{
		{"higher version wins", Holding{Epoch: "e1", Version: 4, Parts: y}, Holding{Epoch: "e1", Version: 4, Parts: y}},
		{"lower version loses", Holding{Epoch: "e1", Version: 2, Parts: y}, Holding{Epoch: "e1", Version: 3, Parts: x}},
		{"new epoch, higher version", Holding{Epoch: "e0", Version: 4, Parts: y}, Holding{Epoch: "e0", Version: 4, Parts: y}},
		{"new epoch, lower version", Holding{Epoch: "e9", Version: 1, Parts: y}, Holding{Epoch: "e1", Version: 3, Parts: x}},
		{"tie: greater epoch", Holding{Epoch: "e2", Version: 3, Parts: NewBitmap(8)}, Holding{Epoch: "e2", Version: 3, Parts: NewBitmap(8)}},
		// Equal version and epoch: one of the two, never their union.
		{"tie: bitmap order", Holding{Epoch: "e1", Version: 3, Parts: y}, Holding{Epoch: "e1", Version: 3, Parts: y}},
	} {
		got := h.Merge(Holdings{"n1": tc.other})["n1"]
		back := Holdings{"n1": tc.other}.Merge(h)["n1"]
		if !holdingEq(got, tc.want) || !holdingEq(back, tc.want) {
			t.Errorf("%s: got %+v / %+v, want %+v", tc.name, got, back, tc.want)
		}
	}
	s := h.Set("n1", "e5", y).Set("n2", "e2", x)
	if s["n1"].Version != 4 || s["n1"].Epoch != "e5" || s["n2"].Version != 1 || h["n1"].Version != 3 || len(h) != 1 {
		t.Errorf("Set: %+v (receiver %+v)", s, h)
	}
	if got := Holdings(nil).Set("n1", "e", x); got["n1"].Version != 1 {
		t.Errorf("Set on nil: %+v", got)
	}
}

func TestHoldingsEncodeRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		h := genHoldings().Draw(t, "h")
		b := h.Encode()
		got, err := DecodeHoldings(b)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if !got.Equal(h) || !bytes.Equal(got.Encode(), b) {
			t.Fatalf("round trip changed %+v into %+v", h, got)
		}
	})
	// Real sizes: 1024 partitions take 128 bytes of words per node.
	h := Holdings{"node-1": {Epoch: "0123456789abcdef", Version: 7, Parts: FullBitmap(1024).Without(5)}}
	b := h.Encode()
	if got, err := DecodeHoldings(b); err != nil || !got.Equal(h) || got["node-1"].Parts.Count() != 1023 {
		t.Fatalf("1024 partitions: %v", err)
	}
	t.Logf("one node, 1024 partitions: %d bytes", len(b))
}

func TestDecodeHoldingsErrors(t *testing.T) {
	valid := Holdings{"a": {Epoch: "e", Version: 1, Parts: NewBitmap(70).With(69)}}.Encode()
	// hand builds one holding of id "a", empty epoch, version 1, then tail.
	hand := func(tail ...byte) []byte { return append([]byte{1, 1, 1, 'a', 0, 1}, tail...) }
	a := Holdings{"a": {}}.Encode()[2:]
	b := Holdings{"b": {}}.Encode()[2:]
	cases := map[string][]byte{
		"empty":            {},
		"format":           {0, 0},
		"count too large":  {1, 0x81, 0x08},
		"count beyond":     {1, 3, 1, 'a'},
		"truncated":        valid[:len(valid)-3],
		"trailing":         append(slices.Clone(valid), 9),
		"bad id":           {1, 1, 1, ' ', 0, 1, 0},
		"too many parts":   hand(0x81, 0x80, 0x04), // 65537
		"words beyond":     hand(0x80, 0x08),       // 1024 partitions, no words
		"bits past end":    hand(1, 2, 0, 0, 0, 0, 0, 0, 0),
		"unsorted":         slices.Concat([]byte{1, 2}, b, a),
		"duplicate":        slices.Concat([]byte{1, 2}, a, a),
		"padded partition": hand(0x80, 0x00),
	}
	for name, in := range cases {
		if _, err := DecodeHoldings(in); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if _, err := DecodeHoldings(hand(1, 1, 0, 0, 0, 0, 0, 0, 0)); err != nil {
		t.Errorf("hand-built: %v", err)
	}
	if got, err := DecodeHoldings([]byte{1, 0}); err != nil || len(got) != 0 {
		t.Errorf("empty holdings: %v %v", got, err)
	}
}

func TestHoldingsValidate(t *testing.T) {
	ok := Holdings{"a": {Epoch: "e", Parts: NewBitmap(maxPartitions)}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Holdings{"a|": {}}).Validate(); !errors.Is(err, ErrInvalidNodeID) {
		t.Errorf("bad id: %v", err)
	}
	if err := (Holdings{"a": {Epoch: string(make([]byte, 256))}}).Validate(); !errors.Is(err, ErrInvalidMember) {
		t.Errorf("long epoch: %v", err)
	}
	if err := (Holdings{"a": {Parts: NewBitmap(maxPartitions + 1)}}).Validate(); !errors.Is(err, ErrInvalidMember) {
		t.Errorf("big bitmap: %v", err)
	}
}

func FuzzDecodeHoldings(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 0})
	f.Add(Holdings{"node-1": {Epoch: "e1", Version: 2, Parts: FullBitmap(1024)}}.Encode())
	f.Add(Holdings{
		"a": {Epoch: "", Version: 0, Parts: NewBitmap(0)},
		"b": {Epoch: "e", Version: 1 << 50, Parts: NewBitmap(65).With(64)},
	}.Encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := DecodeHoldings(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if err := h.Validate(); err != nil {
			t.Fatalf("decoded invalid holdings: %v", err)
		}
		if !bytes.Equal(h.Encode(), b) {
			t.Fatalf("not canonical: %x re-encodes as %x", b, h.Encode())
		}
		if !h.Merge(h).Equal(h) {
			t.Fatal("Merge with itself changed the holdings")
		}
		for _, hd := range h {
			if c := hd.Parts.Count(); c > hd.Parts.Len() {
				t.Fatalf("count %d > len %d", c, hd.Parts.Len())
			}
		}
	})
}
