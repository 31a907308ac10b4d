package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/quorumkv/quorumkv/ring"
)

func TestDecodeSiblings(t *testing.T) {
	body := `{"siblings":[
		{"value":{"name":"Ada"},"encoding":"json","content_type":"application/json","last_modified":"2026-11-26T08:32:00.952253607Z"},
		{"value":"AQI=","encoding":"base64","content_type":"application/octet-stream","last_modified":"2026-11-26T08:32:00.959099228Z"}]}`
	got, err := decodeSiblings([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || string(got[0].Value) != `{"name":"Ada"}` || !got[0].JSON || got[0].ContentType != "application/json" ||
		!bytes.Equal(got[1].Value, []byte{1, 2}) || got[1].JSON || got[1].LastModified.Nanosecond() != 959099228 {
		t.Fatalf("%+v", got)
	}
	if got, err := decodeSiblings([]byte(`{"siblings":[]}`)); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v %v", got, err)
	}
	for _, bad := range []string{``, `{}`, `{"siblings":null}`, `{"siblings":[{"value":"x","encoding":"rot13"}]}`,
		`{"siblings":[{"value":"!!","encoding":"base64"}]}`, `{"siblings":[{"value":1,"encoding":"base64"}]}`,
		`{"siblings":[{"value":1,"encoding":"json","last_modified":"yesterday"}]}`, `{"siblings":[{"encoding":"json"}]}`} {
		if _, err := decodeSiblings([]byte(bad)); err == nil {
			t.Errorf("decodeSiblings(%s) succeeded", bad)
		}
	}
}

func TestDecodeError(t *testing.T) {
	var q *QuorumError
	err := decodeError(503, []byte(`{"error":"quorum_not_met","message":"read quorum not met: required 2, acknowledged 0 (too few replicas answered)","required":2,"acknowledged":0}`))
	if !errors.As(err, &q) || q.Op != "read" || q.Required != 2 || q.Acknowledged != 0 || q.Timeout {
		t.Fatalf("%#v", err)
	}
	var api *APIError
	err = decodeError(409, []byte(`{"error":"too_many_siblings","message":"too many"}`))
	if !errors.As(err, &api) || api.StatusCode != 409 || api.Code != "too_many_siblings" || api.Message != "too many" {
		t.Fatalf("%#v", err)
	}
	err = decodeError(502, []byte("<html>bad gateway</html>"))
	if !errors.As(err, &api) || api.Code != "" || api.Message != "<html>bad gateway</html>" || err.Error() != "quorumkv: 502 Bad Gateway: <html>bad gateway</html>" {
		t.Fatalf("%#v %q", err, err)
	}
}

func TestResultValue(t *testing.T) {
	one := &Result{Siblings: []Sibling{{Value: []byte(`{"a":1}`), JSON: true}}}
	var v struct{ A int }
	if err := one.Decode(&v); err != nil || v.A != 1 {
		t.Fatalf("%v %v", v, err)
	}
	two := &Result{Siblings: []Sibling{{Value: []byte(`1`)}, {Value: []byte(`2`)}}}
	if err := two.Decode(&v); !errors.Is(err, ErrSiblings) {
		t.Fatal(err)
	}
	if _, err := (&Result{}).Value(); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	bad := &Result{Siblings: []Sibling{{Value: []byte(`nope`)}}}
	if err := bad.Decode(&v); err == nil {
		t.Fatal("decoded nope")
	}
}

func TestBackoffCeiling(t *testing.T) {
	base, max := 50*time.Millisecond, time.Second
	want := []time.Duration{50, 100, 200, 400, 800, 1000, 1000}
	for k, w := range want {
		if got := backoffCeiling(base, max, k+1); got != w*time.Millisecond {
			t.Errorf("retry %d: ceiling %v, want %v", k+1, got, w*time.Millisecond)
		}
	}
	if got := backoffCeiling(0, max, 5); got != 0 {
		t.Errorf("zero base: %v", got)
	}
}

func TestRequestID(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := newRequestID()
		if len(id) != 32 || !validRequestID(id) || seen[id] {
			t.Fatalf("request id %q", id)
		}
		seen[id] = true
	}
	for id, ok := range map[string]bool{"a": true, "A-z_0.9:x": true, "": false, "a b": false, "é": false, "a/b": false,
		string(make([]byte, 65)): false} {
		if validRequestID(id) != ok {
			t.Errorf("validRequestID(%q) = %v", id, !ok)
		}
	}
}

// testTable is a table over nodes n1..n<nodes> with 16 partitions, each
// counting three consecutive nodes.
func testTable(nodes int) *table {
	v := clusterView{Version: "v1", N: 3, Partitions: 16, Settled: true, Addresses: map[string]string{}, States: map[string]string{}}
	for i := range nodes {
		id := fmt.Sprintf("n%d", i+1)
		v.Addresses[id] = fmt.Sprintf("10.0.0.%d:80", i+1)
		v.States[id] = "member"
	}
	for p := range v.Partitions {
		v.Counting = append(v.Counting, []string{fmt.Sprintf("n%d", p%nodes+1), fmt.Sprintf("n%d", (p+1)%nodes+1), fmt.Sprintf("n%d", (p+2)%nodes+1)})
	}
	b, _ := json.Marshal(v)
	t, err := parseTable(b)
	if err != nil {
		panic(err)
	}
	return t
}

func TestCandidates(t *testing.T) {
	c := &Client{cfg: defaultConfig(), endpoints: []string{"10.0.0.1:80", "lb:80"}}
	tab := testTable(5)
	c.table.Store(tab)
	p := ring.PartitionOf(16, "b", "k")
	replicas := tab.replicaAddrs("b", "k")
	if len(replicas) != 3 || replicas[0] != tab.addrs[tab.counting[p][0]] {
		t.Fatalf("replicas %v for partition %d (%v)", replicas, p, tab.counting[p])
	}
	firsts := map[string]int{}
	for range 30 {
		got := c.candidates("b", "k")
		// The key's three replicas come first, then the two other nodes and
		// the endpoint that is no node, each once.
		if len(got) != 6 {
			t.Fatalf("candidates %v", got)
		}
		first := slices.Clone(got[:3])
		slices.Sort(first)
		want := slices.Clone(replicas)
		slices.Sort(want)
		if !slices.Equal(first, want) {
			t.Fatalf("candidates %v: the replicas %v do not come first", got, replicas)
		}
		firsts[got[0]]++
	}
	if len(firsts) != 3 {
		t.Fatalf("first candidates %v: the replicas do not take turns", firsts)
	}
	// A replica whose connection failed goes last.
	c.health.markDown(replicas[0])
	for range 6 {
		got := c.candidates("b", "k")
		if got[len(got)-1] != replicas[0] || !slices.Contains(got[:2], replicas[1]) || !slices.Contains(got[:2], replicas[2]) {
			t.Fatalf("candidates %v with %s down", got, replicas[0])
		}
	}
	// Round-robin ignores the table.
	c.cfg.routing = RoundRobin
	if got := c.candidates("b", "k"); len(got) != 2 {
		t.Fatalf("round-robin candidates %v", got)
	}
}

func TestParseTable(t *testing.T) {
	tab := testTable(4)
	if tab.version != "v1" || tab.partitions != 16 || len(tab.nodes) != 4 {
		t.Fatalf("%+v", tab)
	}
	v := clusterView{Version: "v", Partitions: 2, Counting: [][]string{{"a"}, {"b", "ghost"}},
		Addresses: map[string]string{"a": "h:1", "b": "h:2", "c": "h:3"}, States: map[string]string{"a": "member", "b": "member", "c": "removed"}}
	b, _ := json.Marshal(v)
	tab, err := parseTable(b)
	if err != nil || !slices.Equal(tab.nodes, []string{"h:1", "h:2"}) {
		t.Fatalf("%+v %v", tab, err)
	}
	for p := range 2 {
		for _, k := range []string{"x", "y", "z"} {
			if ring.PartitionOf(2, "b", k) == p {
				// Unknown ids ("ghost") are skipped.
				if got := tab.replicaAddrs("b", k); len(got) != 1 {
					t.Fatalf("partition %d: %v", p, got)
				}
			}
		}
	}
	for _, bad := range []string{`{}`, `{"ring_version":"v","partitions":0}`, `{"ring_version":"v","partitions":2,"counting":[[]]}`, `[`} {
		if _, err := parseTable([]byte(bad)); err == nil {
			t.Errorf("parseTable(%s) succeeded", bad)
		}
	}
}

// FuzzDecode feeds the decoders of node answers arbitrary bytes: they
// return errors, never panic, and a table they accept routes every key.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"siblings":[{"value":{"a":1},"encoding":"json","content_type":"application/json","last_modified":"2026-11-26T08:32:00.952253607Z"}]}`))
	f.Add([]byte(`{"error":"quorum_not_met","message":"write quorum not met","required":3,"acknowledged":2}`))
	f.Add([]byte(`{"ring_version":"v","partitions":2,"n":3,"counting":[["a"],["b"]],"addresses":{"a":"h:1"},"states":{"a":"member"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeSiblings(b)
		if err := decodeError(503, b); err == nil || err.Error() == "" {
			t.Fatal("decodeError returned no error")
		}
		if tab, err := parseTable(b); err == nil {
			for _, k := range []string{"", "k", string(b)} {
				_ = tab.replicaAddrs("b", k)
			}
		}
	})
}
