package election

import (
	"fmt"
	"slices"
	"testing"
)

func TestPreferredSpread(t *testing.T) {
	nodes := []string{"node-1", "node-2", "node-3"}
	for _, tc := range []struct {
		keys     int
		min, max int
	}{
		{keys: 30, min: 5, max: 15},      // expected 10 each; a uniform hash stays in 5..15 about 95% of the time
		{keys: 1000, min: 290, max: 376}, // expected 333, ±3 standard deviations
	} {
		t.Run(fmt.Sprint(tc.keys), func(t *testing.T) {
			count := map[string]int{}
			for i := range tc.keys {
				count[Preferred(fmt.Sprintf("default/svc-%d", i), nodes)]++
			}
			for _, n := range nodes {
				if count[n] < tc.min || count[n] > tc.max {
					t.Errorf("%s preferred for %d of %d keys, want %d..%d (all: %v)", n, count[n], tc.keys, tc.min, tc.max, count)
				}
			}
		})
	}
}

func TestPreferredRemovalMovesOnlyTheRemovedNodesKeys(t *testing.T) {
	nodes := []string{"node-1", "node-2", "node-3", "node-4"}
	for _, gone := range nodes {
		rest := slices.DeleteFunc(slices.Clone(nodes), func(n string) bool { return n == gone })
		moved := 0
		for i := range 1000 {
			k := fmt.Sprintf("ns-%d/svc", i)
			before, after := Preferred(k, nodes), Preferred(k, rest)
			if before != gone && after != before {
				t.Fatalf("removing %s moved %s from %s to %s", gone, k, before, after)
			}
			if before == gone {
				moved++
			}
		}
		if moved == 0 {
			t.Errorf("%s was preferred for no key", gone)
		}
	}
}

func TestPreferredIsDeterministic(t *testing.T) {
	// Every agent, in every process and release, must compute the same
	// owner: pin a few answers of the hash.
	nodes := []string{"node-1", "node-2", "node-3"}
	golden := map[string]string{
		"default/web": "node-3", "kube-system/dns": "node-1", "prod/api": "node-2", "a/b": "node-3",
	}
	if got := score("default/web", "node-1"); got != 0x4518cc228e937e3c {
		t.Errorf("score changed: %#x", got)
	}
	for k, want := range golden {
		if got := Preferred(k, nodes); got != want {
			t.Errorf("Preferred(%q) = %s, want %s", k, got, want)
		}
		rev := slices.Clone(nodes)
		slices.Reverse(rev)
		if got := Preferred(k, rev); got != want {
			t.Errorf("Preferred(%q) depends on candidate order: %s vs %s", k, got, want)
		}
	}
	if Preferred("x", nil) != "" || Preferred("x", []string{""}) != "" {
		t.Error("no candidate must give no preferred node")
	}
	if got := Preferred("x", []string{"only"}); got != "only" {
		t.Errorf("single candidate: got %q", got)
	}
}

// TestScoreIsStable pins score to the values every released agent computes:
// agents of two versions must agree on each address's preferred node while
// a rolling update runs.
func TestScoreIsStable(t *testing.T) {
	for _, c := range []struct {
		key, node string
		want      uint64
	}{
		{"default/web", "node-1", 0x4518cc228e937e3c},
		{"10.0.0.5", "node-2", 0x8a9a722d782c633e},
		{"", "n", 0x33f4dbc3acceab25},
	} {
		if got := score(c.key, c.node); got != c.want {
			t.Errorf("score(%q, %q) = %#x, want %#x", c.key, c.node, got, c.want)
		}
	}
}
