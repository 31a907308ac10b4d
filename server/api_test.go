package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/quorumkv/quorumkv/storage"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRoundTripAndOverwrite(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.must(204, c.do("n1", "PUT", "/v1/kv/docs/k1", `{"a": 1}`))
	r := c.must(200, c.do("n2", "GET", "/v1/kv/docs/k1", ""))
	if r.body != `{"a": 1}` || r.header.Get("Content-Type") != "application/json" || r.header.Get("X-Context") == "" {
		t.Fatalf("GET: %q %v", r.body, r.header)
	}
	if r.header.Get("X-Ring-Version") != c.anyNode().placement().Version() {
		t.Fatalf("X-Ring-Version %q", r.header.Get("X-Ring-Version"))
	}
	// A plain PUT replaces the value it reads, whichever node takes it.
	c.must(204, c.do("n3", "PUT", "/v1/kv/docs/k1", `{"a": 2}`))
	r = c.must(200, c.do("n1", "GET", "/v1/kv/docs/k1?r=3", ""))
	if r.body != `{"a": 2}` {
		t.Fatalf("after overwrite: %d %q", r.status, r.body)
	}
	// Other content types are stored and returned as they are.
	c.must(204, c.do("n1", "PUT", "/v1/kv/docs/bin", "\x00\xff", "Content-Type", "application/octet-stream"))
	r = c.must(200, c.do("n1", "GET", "/v1/kv/docs/bin", ""))
	if r.body != "\x00\xff" || r.header.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("binary: %q %q", r.body, r.header.Get("Content-Type"))
	}
	// returnbody answers with the stored siblings.
	r = c.must(200, c.do("n2", "PUT", "/v1/kv/docs/k1?returnbody=true", `{"a": 3}`))
	if !strings.Contains(r.body, `"value":{"a":3}`) {
		t.Fatalf("returnbody: %s", r.body)
	}
}

func TestKeysRoundTripExactly(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	for _, tc := range []struct{ path, key string }{
		{"a%2Fb", "a/b"},
		{"x/y/z", "x/y/z"},
		{"%252F", "%2F"},
		{"%00%FF%20", "\x00\xff "},
		{"caf%C3%A9", "café"},
	} {
		c.must(204, c.do("n1", "PUT", "/v1/kv/k/"+tc.path+"?w=3", fmt.Sprintf("%q", tc.path)))
		if got := c.liveValues("n2", "k", tc.key); len(got) != 1 || got[0] != fmt.Sprintf("%q", tc.path) {
			t.Errorf("path %q: stored under %q: %q", tc.path, tc.key, got)
		}
	}
	// a/b and a%2Fb are the same key.
	if r := c.must(200, c.do("n3", "GET", "/v1/kv/k/a/b", "")); r.body != `"a%2Fb"` {
		t.Fatalf("a/b: %q", r.body)
	}
}

func TestQuorumOverridesAndNodeDown(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.must(204, c.do("n1", "PUT", "/v1/kv/b/k?w=3", `1`))
	c.must(200, c.do("n1", "GET", "/v1/kv/b/k?r=all", ""))
	c.must(200, c.do("n1", "GET", "/v1/kv/b/k?r=one", ""))
	c.must(400, c.do("n1", "GET", "/v1/kv/b/k?r=4", ""))

	c.stop("n3")
	c.must(204, c.do("n1", "PUT", "/v1/kv/b/k?w=2", `2`))
	r := c.must(503, c.do("n1", "PUT", "/v1/kv/b/k?w=3", `3`))
	var body errorBody
	if err := json.Unmarshal([]byte(r.body), &body); err != nil || body.Error != "quorum_not_met" || body.Required != 3 || body.Acknowledged == nil || *body.Acknowledged != 2 {
		t.Fatalf("503 body: %s", r.body)
	}
	c.must(503, c.do("n2", "GET", "/v1/kv/b/k?r=3", ""))
	c.must(200, c.do("n2", "GET", "/v1/kv/b/k?r=2", ""))
	c.must(503, c.do("n2", "DELETE", "/v1/kv/b/k?w=all", ""))
}

// Two writes carrying the same earlier context both survive as siblings; a
// write with the merged context leaves one.
func TestSiblingsAndResolve(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.must(204, c.do("n1", "PUT", "/v1/kv/b/k", `"v0"`))
	ctx := c.must(200, c.do("n1", "GET", "/v1/kv/b/k", "")).header.Get("X-Context")
	c.must(204, c.do("n1", "PUT", "/v1/kv/b/k", `"left"`, "X-Context", ctx))
	c.must(204, c.do("n2", "PUT", "/v1/kv/b/k", `"right"`, "X-Context", ctx))
	r := c.must(300, c.do("n3", "GET", "/v1/kv/b/k?r=3", ""))
	var body struct {
		Siblings []struct {
			Value    json.RawMessage `json:"value"`
			Encoding string          `json:"encoding"`
		} `json:"siblings"`
	}
	if err := json.Unmarshal([]byte(r.body), &body); err != nil {
		t.Fatal(err)
	}
	var vals []string
	for _, s := range body.Siblings {
		vals = append(vals, string(s.Value))
	}
	slices.Sort(vals)
	if !slices.Equal(vals, []string{`"left"`, `"right"`}) {
		t.Fatalf("siblings %v", vals)
	}
	c.must(204, c.do("n3", "PUT", "/v1/kv/b/k", `"merged"`, "X-Context", r.header.Get("X-Context")))
	if r := c.must(200, c.do("n1", "GET", "/v1/kv/b/k?r=3", "")); r.body != `"merged"` {
		t.Fatalf("after resolve: %s", r.body)
	}
}

// riak_test's sibling_explosion: two clients interleave writes, each
// carrying the context its own previous write returned.
func TestNoSiblingExplosionOverHTTP(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	empty := storage.EncodeContext(storage.Context{})
	ctxs := []string{empty, empty}
	for i := range 100 {
		w := i % 2
		node := c.ids[i%3]
		r := c.must(204, c.do(node, "PUT", "/v1/kv/b/explode?w=3", fmt.Sprint(i), "X-Context", ctxs[w]))
		ctxs[w] = r.header.Get("X-Context")
	}
	r := c.must(300, c.do("n1", "GET", "/v1/kv/b/explode?r=3", ""))
	var body struct{ Siblings []json.RawMessage }
	if err := json.Unmarshal([]byte(r.body), &body); err != nil {
		t.Fatal(err)
	}
	if len(body.Siblings) != 2 {
		t.Fatalf("%d siblings, want 2: %s", len(body.Siblings), r.body)
	}
}

func TestDelete(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.must(204, c.do("n1", "PUT", "/v1/kv/b/k", `1`))
	r := c.must(204, c.do("n2", "DELETE", "/v1/kv/b/k", ""))
	if r.header.Get("X-Context") == "" {
		t.Fatal("DELETE without X-Context")
	}
	r = c.must(404, c.do("n3", "GET", "/v1/kv/b/k?r=3", ""))
	if r.header.Get("X-Context") == "" {
		t.Fatal("404 of a deleted key must carry X-Context")
	}
	// An absent key's 404 carries the empty context: two clients that
	// create it from what they read end with siblings.
	absent := c.must(404, c.do("n3", "GET", "/v1/kv/b/never", "")).header.Get("X-Context")
	if ctx, err := storage.DecodeContext(absent); err != nil || !ctx.IsEmpty() {
		t.Fatalf("absent key's 404 carries %q (%v), want the empty context", absent, err)
	}
	c.must(204, c.do("n1", "PUT", "/v1/kv/b/never", `1`, "X-Context", absent))
	c.must(204, c.do("n2", "PUT", "/v1/kv/b/never", `2`, "X-Context", absent))
	c.must(300, c.do("n3", "GET", "/v1/kv/b/never?r=3", ""))
	// Writing again after the delete works and is visible.
	c.must(204, c.do("n1", "PUT", "/v1/kv/b/k", `2`))
	if r := c.must(200, c.do("n2", "GET", "/v1/kv/b/k?r=3", "")); r.body != "2" {
		t.Fatalf("after re-put: %q", r.body)
	}
}

// A read repairs the replicas it asked: all of them at r=3, and all of
// them at any r when it is one of the ReadRepairChance reads.
func TestReadRepair(t *testing.T) {
	for _, tt := range []struct {
		name   string
		chance float64
		query  string
	}{
		{"r=3 asks every replica", 0, "r=3"},
		{"a full read at r=2", 1, "r=2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCluster(t, 3, func(cfg *Config) {
				cfg.Handoff.PauseHints = true
				cfg.PauseAntiEntropy = true
				cfg.ReadRepairChance = tt.chance
			})
			c.stop("n3")
			c.must(204, c.do("n1", "PUT", "/v1/kv/b/k", `"fresh"`))
			c.start("n3")
			c.waitSettled()
			if got := c.liveValues("n3", "b", "k"); got != nil {
				t.Fatalf("n3 has %q before the read", got)
			}
			c.must(200, c.do("n1", "GET", "/v1/kv/b/k?"+tt.query, ""))
			eventually(t, "read repair of n3", func() bool {
				got := c.liveValues("n3", "b", "k")
				return len(got) == 1 && got[0] == `"fresh"`
			})
		})
	}
}

// Without a full read, a read asks R replicas, the coordinator's own
// first: an r=1 read at a replica makes no remote call at all, an r=2 read
// one. A plain write reads nothing before it writes, whatever R: its own
// replica's context it reads inside the store as it issues the version,
// and the others' come back with their applies.
func TestReadsAskRReplicas(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) {
		cfg.ReadRepairChance = 0
		cfg.ReplicaTimeout = 10 * time.Second // no spill-over to a third replica under load
	})
	n := c.servers["n1"].Node
	gets := func() float64 { return testutil.ToFloat64(n.metrics.replicaCalls.WithLabelValues("get", "ok")) }
	c.must(204, c.do("n1", "PUT", "/v1/kv/b/k?w=3", `"v"`))
	for _, tt := range []struct {
		method, query string
		calls         float64 // replica reads, a GET's local one included
	}{
		{"GET", "r=1", 1},
		{"GET", "r=2", 2},
		{"GET", "r=3", 3},
		{"PUT", "r=1&w=3", 0},
		{"PUT", "r=2&w=3", 0},
		{"PUT", "r=3&w=3", 0},
	} {
		before := gets()
		want := 200
		if tt.method == "PUT" {
			want = 204
		}
		c.must(want, c.do("n1", tt.method, "/v1/kv/b/k?"+tt.query, `"v"`))
		if got := gets() - before; got != tt.calls {
			t.Errorf("%s ?%s: %v replica reads, want %v", tt.method, tt.query, got, tt.calls)
		}
	}
}

// A plain write replaces what R replicas hold, also a version that only
// another replica has: that replica's apply answers with its context, and
// the write is issued once more over it. With r=1 it replaces only what
// the coordinator's replica holds, and the other version stays a sibling.
func TestPlainWriteReplacesWhatOtherReplicasHold(t *testing.T) {
	for _, tt := range []struct {
		query    string
		onN2     []string // live values on n2 afterwards (n1 and n3 hold "plain")
		reissues float64
	}{
		{"r=3&w=3", []string{`"plain"`}, 1},
		{"r=1&w=3", []string{`"only-n2"`, `"plain"`}, 0},
	} {
		t.Run(tt.query, func(t *testing.T) {
			c := newTestCluster(t, 3, func(cfg *Config) {
				cfg.ReadRepairChance = 0
				cfg.Handoff.PauseHints = true
				cfg.PauseAntiEntropy = true
			})
			c.must(204, c.do("n1", "PUT", "/v1/kv/b/k?w=3", `"first"`))
			// A version only n2 holds, as if n1 and n3 had missed it.
			k := c.servers["n2"].Node.keyFor("b", "k")
			got, err := c.store("n2").Get(k)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.store("n2").Put(k, storage.Write{Context: got.Context, Value: []byte(`"only-n2"`), ContentType: "application/json", Now: time.Now()}); err != nil {
				t.Fatal(err)
			}
			n1 := c.servers["n1"].Node
			before := testutil.ToFloat64(n1.metrics.plainRewrites)
			// With a request id, as the Go client sends: the second issue is
			// not taken for a retry of the first.
			c.must(204, c.do("n1", "PUT", "/v1/kv/b/k?"+tt.query, `"plain"`, "X-Request-Id", "plain-1"))
			for _, id := range []string{"n1", "n2", "n3"} {
				want := []string{`"plain"`}
				if id == "n2" {
					want = tt.onN2
				}
				got := c.liveValues(id, "b", "k")
				slices.Sort(got)
				if !slices.Equal(got, want) {
					t.Errorf("%s holds %q, want %q", id, got, want)
				}
			}
			if got := testutil.ToFloat64(n1.metrics.plainRewrites) - before; got != tt.reissues {
				t.Errorf("%v reissues, want %v", got, tt.reissues)
			}
		})
	}
}

// A replica that is slow to answer is replaced by the next one after
// ReplicaTimeout: a read and a plain write still answer well within their
// deadline, which the slow replica alone would miss.
func TestSlowReplicaIsReplacedInReads(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) {
		cfg.ReadRepairChance = 0
		cfg.ReplicaTimeout = 200 * time.Millisecond
	})
	n := c.servers["n1"].Node
	c.must(204, c.do("n1", "PUT", "/v1/kv/b/k?w=3", `"v"`))
	order := n.readOrder(n.keyFor("b", "k"), true)
	if len(order) != 3 || order[0].node != "n1" {
		t.Fatalf("read order %v, want n1 first of three", order)
	}
	slow := order[1].node // the replica an r=2 read asks after n1
	c.net.Delay("n1", slow, 5*time.Second)
	c.must(200, c.do("n1", "GET", "/v1/kv/b/k?r=2&timeout=2s", ""))
	c.must(204, c.do("n1", "PUT", "/v1/kv/b/k?r=2&w=2&timeout=2s", `"w"`))
	c.net.Heal()
}

func TestRestartKeepsData(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	for i := range 20 {
		c.must(204, c.do(c.ids[i%3], "PUT", fmt.Sprintf("/v1/kv/b/k%d?w=3", i), fmt.Sprint(i)))
	}
	for _, id := range c.ids {
		c.stop(id)
	}
	for _, id := range c.ids {
		c.start(id)
	}
	c.waitSettled()
	for i := range 20 {
		if r := c.must(200, c.do("n2", "GET", fmt.Sprintf("/v1/kv/b/k%d?r=3", i), "")); r.body != fmt.Sprint(i) {
			t.Fatalf("k%d: %q", i, r.body)
		}
	}
}

// Riak's KV-679: a replica that lost its data must not reissue dots it
// issued before, or a new write would be mistaken for an old one.
func TestWipedReplicaLosesNoWrite(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.must(204, c.do("n1", "PUT", "/v1/kv/b/k?w=3", `"before"`))
	oldActor := c.store("n1").Actor()
	c.stop("n1")
	c.wipe("n1")
	c.start("n1")
	c.waitSettled()
	if c.store("n1").Actor() == oldActor {
		t.Fatal("wiped node kept its epoch")
	}
	// A blind write through the wiped replica is concurrent with the old
	// version: both must survive.
	empty := storage.EncodeContext(storage.Context{})
	c.must(204, c.do("n1", "PUT", "/v1/kv/b/k?w=3", `"after"`, "X-Context", empty))
	r := c.must(300, c.do("n2", "GET", "/v1/kv/b/k?r=3", ""))
	if !strings.Contains(r.body, `"before"`) || !strings.Contains(r.body, `"after"`) {
		t.Fatalf("lost a write: %s", r.body)
	}
	for _, id := range c.ids {
		eventually(t, "every replica holds both versions", func() bool { return len(c.liveValues(id, "b", "k")) == 2 })
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.MaxBody = 64 })
	long := strings.Repeat("k", MaxKeyLen+1)
	for _, tc := range []struct {
		method, path, body string
		headers            []string
		status             int
	}{
		{"PUT", "/v1/kv/bad%20bucket/k", `1`, nil, 400},
		{"PUT", "/v1/kv/b!/k", `1`, nil, 400},
		{"PUT", "/v1/kv/" + strings.Repeat("b", 65) + "/k", `1`, nil, 400},
		{"PUT", "/v1/kv/b/", `1`, nil, 400},
		{"PUT", "/v1/kv/b/" + long, `1`, nil, 400},
		{"PUT", "/v1/kv/b/k?w=0", `1`, nil, 400},
		{"PUT", "/v1/kv/b/k?w=4", `1`, nil, 400},
		{"PUT", "/v1/kv/b/k?r=x", `1`, nil, 400},
		{"PUT", "/v1/kv/b/k?timeout=soon", `1`, nil, 400},
		{"PUT", "/v1/kv/b/k?timeout=-1s", `1`, nil, 400},
		{"PUT", "/v1/kv/b/k?returnbody=maybe", `1`, nil, 400},
		{"PUT", "/v1/kv/b/k", `{"a":`, nil, 400},
		{"PUT", "/v1/kv/b/k", `{}`, []string{"Content-Type", "application/json; charset"}, 400},
		{"PUT", "/v1/kv/b/k", `{}`, []string{"X-Context", "not-a-context"}, 400},
		{"PUT", "/v1/kv/b/k", `"` + strings.Repeat("x", 100) + `"`, nil, 413},
		{"DELETE", "/v1/kv/b/k?w=9", ``, nil, 400},
		{"GET", "/v1/kv/b/k?r=0", ``, nil, 400},
		{"POST", "/v1/kv/b/k", `1`, nil, 405},
	} {
		r := c.do("n1", tc.method, tc.path, tc.body, tc.headers...)
		if r.status != tc.status {
			t.Errorf("%s %s: status %d, want %d: %s", tc.method, tc.path, r.status, tc.status, r.body)
			continue
		}
		var eb errorBody
		if err := json.Unmarshal([]byte(r.body), &eb); err != nil || eb.Error == "" || eb.Message == "" {
			t.Errorf("%s %s: error body %q", tc.method, tc.path, r.body)
		}
	}
	for _, id := range c.ids {
		if got := c.liveValues(id, "b", "k"); got != nil {
			t.Fatalf("%s stored %q from bad input", id, got)
		}
	}
}

func TestSiblingLimit(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.SiblingWarn, cfg.SiblingLimit = 2, 3 })
	empty := storage.EncodeContext(storage.Context{})
	for i := range 3 {
		r := c.must(204, c.do("n1", "PUT", "/v1/kv/b/k?w=3", fmt.Sprint(i), "X-Context", empty))
		if warned := r.header.Get("X-Siblings-Warning") != ""; warned != (i == 2) {
			t.Fatalf("write %d: warning header %q", i, r.header.Get("X-Siblings-Warning"))
		}
	}
	r := c.must(409, c.do("n1", "PUT", "/v1/kv/b/k?w=3", `9`, "X-Context", empty))
	if !strings.Contains(r.body, "too_many_siblings") {
		t.Fatalf("409 body: %s", r.body)
	}
	if got := c.liveValues("n1", "b", "k"); len(got) != 3 {
		t.Fatalf("refused write changed the object: %q", got)
	}
	ctx := c.must(300, c.do("n1", "GET", "/v1/kv/b/k?r=3", "")).header.Get("X-Context")
	c.must(204, c.do("n1", "PUT", "/v1/kv/b/k", `"resolved"`, "X-Context", ctx))
}

// With five nodes and N=3, a node outside a key's preference list forwards
// writes to a replica, which issues the version.
func TestNonReplicaForwardsWrites(t *testing.T) {
	c := newTestCluster(t, 5, nil)
	tab := c.table()
	for i := range 10 {
		key := fmt.Sprintf("k%d", i)
		p := tab.Partition("b", key)
		var outsider string
		for _, id := range c.ids {
			if !c.anyNode().placement().IsCounting(p, id) {
				outsider = id
				break
			}
		}
		c.must(204, c.do(outsider, "PUT", "/v1/kv/b/"+key+"?w=3", `"x"`))
		for _, id := range c.ids {
			got := c.liveValues(id, "b", key)
			if tab.IsPrimary(p, id) != (len(got) == 1) {
				t.Fatalf("%s (primary=%v) holds %q", id, tab.IsPrimary(p, id), got)
			}
		}
		o, _ := c.store(tab.Primaries(p)[0]).Get(storage.Key{Partition: uint32(p), Bucket: "b", Key: key})
		actor := o.Siblings[0].Dot.Actor
		if !slices.ContainsFunc(tab.Primaries(p), func(id string) bool { return strings.HasPrefix(actor, id+".") }) {
			t.Fatalf("version issued by %s, not a replica of %s", actor, key)
		}
		if r := c.must(200, c.do(outsider, "GET", "/v1/kv/b/"+key, "")); r.body != `"x"` {
			t.Fatalf("read through outsider: %q", r.body)
		}
	}
}

func TestClusterParamsMismatchRefused(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.stop("n2")
	cfg := c.cfg
	cfg.NodeID = "n2"
	cfg.Advertise = c.peers["n2"]
	cfg.Gossip.BindAddr = "127.0.0.1:0"
	cfg.Ring.Partitions = 128
	_, err := Start(cfg, c.dirs["n2"], 0, nil)
	if err == nil || !strings.Contains(err.Error(), "partitions=64") || !strings.Contains(err.Error(), "partitions=128") {
		t.Fatalf("got %v, want a mismatch naming both", err)
	}
}

func TestInternalAPIRefusesGarbage(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	k := c.servers["n1"].Node.keyFor("b", "k")
	good := storage.AppendObject(appendKey(nil, k), &storage.Object{})
	for _, tc := range []struct {
		name, cluster, ctype string
		body                 []byte
		status               int
	}{
		{"no cluster header", "", objectType, good, 409},
		{"other cluster", "n=5,partitions=64", objectType, good, 409},
		{"wrong type", c.servers["n1"].Node.cluster, "application/json", good, 415},
		{"garbage", c.servers["n1"].Node.cluster, objectType, []byte{0xff, 0xff}, 400},
		{"bad object", c.servers["n1"].Node.cluster, objectType, append(appendKey(nil, k), 7, 7), 400},
		{"wrong partition", c.servers["n1"].Node.cluster, objectType,
			storage.AppendObject(appendKey(nil, storage.Key{Partition: k.Partition + 1, Bucket: "b", Key: "k"}), &storage.Object{}), 400},
	} {
		req, _ := http.NewRequest("POST", "http://"+c.peers["n1"]+internalApply, strings.NewReader(string(tc.body)))
		req.Header.Set("Content-Type", tc.ctype)
		if tc.cluster != "" {
			req.Header.Set(clusterHeader, tc.cluster)
		}
		resp, err := c.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: status %d, want %d", tc.name, resp.StatusCode, tc.status)
		}
	}
}

func TestClusterEndpointAndMetrics(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.must(200, c.do("n1", "GET", "/livez", ""))
	c.must(200, c.do("n1", "GET", "/readyz", ""))
	var view struct {
		Node        string            `json:"node"`
		Members     []string          `json:"members"`
		Addresses   map[string]string `json:"addresses"`
		N           int               `json:"n"`
		Partitions  int               `json:"partitions"`
		RingVersion string            `json:"ring_version"`
		Lists       [][]string        `json:"preference_lists"`
	}
	r := c.must(200, c.do("n2", "GET", "/v1/cluster", ""))
	if err := json.Unmarshal([]byte(r.body), &view); err != nil {
		t.Fatal(err)
	}
	if view.Node != "n2" || len(view.Members) != 3 || len(view.Addresses) != 3 || view.N != 3 || view.Partitions != 64 || len(view.Lists) != 64 || view.RingVersion != c.anyNode().placement().Version() {
		t.Fatalf("cluster view: %+v", view)
	}
	c.must(204, c.do("n1", "PUT", "/v1/kv/b/k", `1`))
	c.must(200, c.do("n1", "GET", "/v1/kv/b/k", ""))
	c.stop("n3")
	c.must(503, c.do("n1", "GET", "/v1/kv/b/k?r=3", ""))
	m := c.must(200, c.do("n1", "GET", "/metrics", "")).body
	for _, want := range []string{
		`quorumkv_requests_total{op="put",status="204"} 1`,
		`quorumkv_requests_total{op="get",status="200"} 1`,
		`quorumkv_quorum_failures_total{op="get"} 1`,
		`quorumkv_request_duration_seconds_bucket{op="get",status="503"`,
		`quorumkv_read_siblings_count 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
