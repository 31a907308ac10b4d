package client_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/quorumkv/quorumkv/client"
)

// unionAdd returns an Update function that merges every sibling (a JSON
// array of strings) by union and adds elems.
func unionAdd(sawSiblings *atomic.Int64, elems ...string) func([]client.Sibling) ([]byte, error) {
	return func(siblings []client.Sibling) ([]byte, error) {
		if len(siblings) > 1 && sawSiblings != nil {
			sawSiblings.Add(1)
		}
		set := map[string]bool{}
		for _, e := range elems {
			set[e] = true
		}
		for _, s := range siblings {
			var got []string
			if err := s.Decode(&got); err != nil {
				return nil, err
			}
			for _, e := range got {
				set[e] = true
			}
		}
		return json.Marshal(slices.Sorted(maps.Keys(set)))
	}
}

// TestUpdateConcurrentUnion: 20 goroutines each add 10 elements of their
// own, one Update at a time, to a set held in one JSON document. Concurrent
// Updates make siblings, which later Updates merge by union: nothing is
// lost.
func TestUpdateConcurrentUnion(t *testing.T) {
	cl := useShared(t)
	c := newClient(t, cl.endpoints())
	ctx := testCtx(t)
	const writers, each = 20, 10
	sets := fresh("sets")
	var sawSiblings atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				elem := fmt.Sprintf("w%02d-e%02d", w, i)
				if _, err := c.Update(ctx, sets, "union", unionAdd(&sawSiblings, elem), client.ContentType("application/json")); err != nil {
					errs <- fmt.Errorf("writer %d, element %d: %w", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d of %d updates merged siblings", sawSiblings.Load(), writers*each)

	// Every element is in the union of what the replicas hold.
	res, err := c.Get(ctx, sets, "union", client.R(3))
	if err != nil {
		t.Fatal(err)
	}
	all := map[string]bool{}
	for _, s := range res.Siblings {
		var got []string
		if err := s.Decode(&got); err != nil {
			t.Fatal(err)
		}
		for _, e := range got {
			all[e] = true
		}
	}
	if len(all) != writers*each {
		t.Fatalf("%d elements, want %d", len(all), writers*each)
	}
	// One more Update, reading and writing every replica, leaves one value
	// holding them all.
	if _, err := c.Update(ctx, sets, "union", unionAdd(nil), client.R(3), client.W(3)); err != nil {
		t.Fatal(err)
	}
	set, res, err := client.GetJSON[[]string](ctx, c, sets, "union", client.R(3))
	if err != nil {
		t.Fatalf("after the final Update: %v (%d siblings)", err, len(res.Siblings))
	}
	if len(set) != writers*each {
		t.Fatalf("%d elements after the final Update, want %d", len(set), writers*each)
	}
}

func TestUpdate(t *testing.T) {
	cl := useShared(t)
	c := newClient(t, cl.endpoints())
	ctx := testCtx(t)

	upd := fresh("upd")
	// An absent key: fn sees no siblings; the content type comes from the
	// option.
	res, err := c.Update(ctx, upd, "new", func(s []client.Sibling) ([]byte, error) {
		if len(s) != 0 {
			return nil, fmt.Errorf("%d siblings for an absent key", len(s))
		}
		return []byte(`["a"]`), nil
	}, client.ContentType("application/json"))
	if err != nil || res.Context == "" {
		t.Fatalf("Update of an absent key: %+v %v", res, err)
	}
	// Without ContentType, the siblings' content type is kept.
	if _, err := c.Update(ctx, upd, "new", unionAdd(nil, "b")); err != nil {
		t.Fatal(err)
	}
	got, r, err := client.GetJSON[[]string](ctx, c, upd, "new", client.R(3))
	if err != nil || !slices.Equal(got, []string{"a", "b"}) || r.Siblings[0].ContentType != "application/json" {
		t.Fatalf("after two Updates: %v %+v %v", got, r, err)
	}
	// An error from fn writes nothing and comes back as is.
	boom := errors.New("boom")
	if _, err := c.Update(ctx, upd, "new", func([]client.Sibling) ([]byte, error) { return nil, boom }); err != boom {
		t.Fatalf("fn's error: %v", err)
	}
	// A deleted key reads as no siblings too; the write supersedes the
	// tombstone.
	if err := c.Delete(ctx, upd, "new", client.W(3)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Update(ctx, upd, "new", unionAdd(nil, "c"), client.ContentType("application/json")); err != nil {
		t.Fatal(err)
	}
	got, _, err = client.GetJSON[[]string](ctx, c, upd, "new", client.R(3))
	if err != nil || !slices.Equal(got, []string{"c"}) {
		t.Fatalf("after delete and Update: %v %v", got, err)
	}
}
