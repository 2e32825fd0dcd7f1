package lab

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// nft runs an nft script in a namespace.
func nft(ns, script string) error {
	_, err := runStdin(context.Background(), script, "ip", "netns", "exec", ns, "nft", "-f", "-")
	return err
}

// CutLink cuts a node off the link but not off the API server: on the
// bridge, every frame to or from its port is dropped except IPv4 and ARP
// between it and the API server. Clients and peers lose it; it still
// reaches the API. RestoreLink undoes it.
func (l *Lab) CutLink(node string) error {
	n := l.Node(node)
	if n == nil {
		return fmt.Errorf("no node %q", node)
	}
	api := l.IP4(1)
	return nft(l.SW, fmt.Sprintf(`table bridge cut-%[1]s {
	chain filt {
		type filter hook forward priority 0; policy accept;
		iifname "%[2]s" ip daddr %[3]s accept
		iifname "%[2]s" arp daddr ip %[3]s accept
		oifname "%[2]s" ip saddr %[3]s accept
		oifname "%[2]s" arp saddr ip %[3]s accept
		iifname "%[2]s" drop
		oifname "%[2]s" drop
	}
}
`, node, n.Port, api))
}

// RestoreLink undoes CutLink.
func (l *Lab) RestoreLink(node string) error {
	return nft(l.SW, "delete table bridge cut-"+node+"\n")
}

// CutAPI cuts a node off the API server only: in its namespace, IPv4 to and
// from the API server's address is dropped. RestoreAPI undoes it.
func (l *Lab) CutAPI(node string) error {
	n := l.Node(node)
	if n == nil {
		return fmt.Errorf("no node %q", node)
	}
	api := l.IP4(1)
	return nft(n.NS, fmt.Sprintf(`table inet cutapi {
	chain out { type filter hook output priority 0; policy accept; ip daddr %[1]s drop; }
	chain in { type filter hook input priority 0; policy accept; ip saddr %[1]s drop; }
}
`, api))
}

// RestoreAPI undoes CutAPI.
func (l *Lab) RestoreAPI(node string) error {
	n := l.Node(node)
	if n == nil {
		return fmt.Errorf("no node %q", node)
	}
	return nft(n.NS, "delete table inet cutapi\n")
}

// SplitLink splits the bridge in two halves: frames between a port of
// half (these nodes) and a port of the rest (other nodes and the client)
// are dropped; the API server's port reaches both. JoinLink undoes it.
func (l *Lab) SplitLink(half ...string) error {
	in := map[string]bool{}
	var a []string
	for _, h := range half {
		n := l.Node(h)
		if n == nil {
			return fmt.Errorf("no node %q", h)
		}
		in[h] = true
		a = append(a, `"`+n.Port+`"`)
	}
	b := []string{`"p-client"`}
	for _, n := range l.Nodes {
		if !in[n.Name] {
			b = append(b, `"`+n.Port+`"`)
		}
	}
	A, B := strings.Join(a, ", "), strings.Join(b, ", ")
	return nft(l.SW, fmt.Sprintf(`table bridge split {
	chain filt {
		type filter hook forward priority 0; policy accept;
		iifname { %[1]s } oifname { %[2]s } drop
		iifname { %[2]s } oifname { %[1]s } drop
	}
}
`, A, B))
}

// JoinLink undoes SplitLink.
func (l *Lab) JoinLink() error { return nft(l.SW, "delete table bridge split\n") }

// runStdin is run with script on the command's standard input.
func runStdin(ctx context.Context, script, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
