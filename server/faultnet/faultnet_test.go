package faultnet

import (
	"testing"
	"time"
)

func TestBlocked(t *testing.T) {
	type check struct {
		from, to string
		blocked  bool
	}
	for _, tc := range []struct {
		name   string
		faults func(n *Network)
		checks []check
	}{
		{"none", func(n *Network) {}, []check{{"a", "b", false}, {"b", "a", false}}},
		{"partition both ways", func(n *Network) { n.Partition("a", "b") },
			[]check{{"a", "b", true}, {"b", "a", true}, {"a", "c", false}, {"c", "b", false}}},
		{"self never", func(n *Network) { n.Partition("a", "a"); n.Isolate("a") },
			[]check{{"a", "a", false}}},
		{"isolate", func(n *Network) { n.Isolate("c") },
			[]check{{"a", "c", true}, {"c", "a", true}, {"b", "c", true}, {"c", "b", true}, {"a", "b", false}}},
		{"isolate covers later nodes", func(n *Network) { n.Isolate("a"); n.Register("d", "127.0.0.1:4") },
			[]check{{"a", "d", true}, {"d", "a", true}}},
		{"isolate spares unknown", func(n *Network) { n.Isolate("a") },
			[]check{{"a", "", false}, {"", "a", false}, {"a", "nobody", false}}},
		{"heal", func(n *Network) { n.Partition("a", "b"); n.Isolate("c"); n.Delay("a", "c", time.Second); n.Heal() },
			[]check{{"a", "b", false}, {"b", "a", false}, {"a", "c", false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := New()
			n.Register("a", "127.0.0.1:1")
			n.Register("b", "127.0.0.1:2")
			n.Register("c", "127.0.0.1:3")
			tc.faults(n)
			for _, c := range tc.checks {
				if got := n.Blocked(c.from, c.to); got != c.blocked {
					t.Errorf("Blocked(%q, %q) = %v, want %v", c.from, c.to, got, c.blocked)
				}
			}
		})
	}
}

func TestDelayAndResolve(t *testing.T) {
	n := New()
	n.Register("a", "127.0.0.1:1", "[::ffff:127.0.0.1]:7")
	n.Register("b", "localhost:2")
	for addr, want := range map[string]string{
		"127.0.0.1:1": "a", "127.0.0.1:7": "a", "localhost:2": "b", "127.0.0.1:2": "", "garbage": "",
	} {
		if got := n.resolve(addr); got != want {
			t.Errorf("resolve(%q) = %q, want %q", addr, got, want)
		}
	}
	n.Delay("a", "b", time.Second)
	if n.delayOf("a", "b") != time.Second || n.delayOf("b", "a") != time.Second {
		t.Fatal("Delay is not set both ways")
	}
	n.Delay("b", "a", 0)
	if n.delayOf("a", "b") != 0 || n.delayOf("b", "a") != 0 {
		t.Fatal("Delay 0 does not remove both ways")
	}
}
