package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The BGP router of the lab: a namespace on the bridge running BIRD 2 with
// an eBGP session to every node, learned routes into its kernel table
// (ECMP), forwarding on. The client routes BGPSubnet through it, so a
// Service address from the BGP pool is reached only through the router.
const (
	RouterIP     = "10.98.0.254"
	RouterAS     = 64512
	NodeAS       = 65000
	BGPSubnet    = "10.98.5.0/24"
	BGPPoolRange = "10.98.5.200-10.98.5.209" // range-<BGPNamespace>
	BGPNamespace = "bgp"                     // the namespace whose Services get BGP pool addresses
)

// RouterNS is the router's namespace.
var RouterNS = Prefix + "-rtr"

func (c *Cluster) birdDir() string { return filepath.Join(c.st.Dir, "router") }

func (c *Cluster) birdConf() string {
	var b strings.Builder
	fmt.Fprintf(&b, `log "%s/bird.log" all;
router id %s;
protocol device { scan time 10; }
protocol kernel k4 { ipv4 { import none; export all; }; merge paths yes; }
template bgp node {
  local %s as %d;
  hold time 9; keepalive time 3; connect retry time 1; error wait time 1, 5;
  ipv4 { import all; export none; };
}
`, c.birdDir(), RouterIP, RouterIP, RouterAS)
	for i := 1; i <= len(c.st.Nodes); i++ {
		fmt.Fprintf(&b, "protocol bgp %s from node { neighbor %s as %d; }\n",
			strings.ReplaceAll(NodeName(i), "-", "_"), NodeIP(i), NodeAS)
	}
	return b.String()
}

// StartRouter adds the router namespace and starts BIRD in it (stopped by
// Down like the control plane). The client gets a route to BGPSubnet via
// the router.
func (c *Cluster) StartRouter(ctx context.Context) error {
	if err := os.MkdirAll(c.birdDir(), 0o755); err != nil {
		return err
	}
	if err := c.st.addMember(RouterNS, RouterIP); err != nil {
		return err
	}
	for _, kv := range []string{"net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.eth0.send_redirects=0"} {
		if _, err := runIn(RouterNS, "sysctl", "-qw", kv); err != nil {
			return err
		}
	}
	if _, err := run("ip", "-n", ClientNS, "route", "replace", BGPSubnet, "via", RouterIP); err != nil {
		return err
	}
	conf := filepath.Join(c.birdDir(), "bird.conf")
	if err := os.WriteFile(conf, []byte(c.birdConf()), 0o644); err != nil {
		return err
	}
	p, err := startProc("bird", RouterNS, filepath.Join(c.birdDir(), "bird.out"), "bird",
		"-f", "-c", conf, "-s", c.birdSock(), "-P", filepath.Join(c.birdDir(), "bird.pid"))
	if err := c.addControl(p, err); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return Poll(ctx, 50*time.Millisecond, func() (bool, error) {
		_, err := c.Birdc("show", "status")
		return err == nil, nil
	})
}

func (c *Cluster) birdSock() string { return filepath.Join(c.birdDir(), "bird.ctl") }

// Birdc runs birdc against the lab's router.
func (c *Cluster) Birdc(args ...string) (string, error) {
	return run("birdc", append([]string{"-s", c.birdSock()}, args...)...)
}

// Established lists the nodes whose BGP session with the router is up.
func (c *Cluster) Established() ([]string, error) {
	out, err := c.Birdc("show", "protocols")
	if err != nil {
		return nil, err
	}
	var up []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && f[1] == "BGP" && f[5] == "Established" {
			up = append(up, strings.ReplaceAll(f[0], "_", "-"))
		}
	}
	return up, nil
}

// RouterNextHops returns the next hops of addr/32 in the router's kernel
// table (none when the route is not there).
func RouterNextHops(addr netip.Addr) ([]string, error) {
	out, err := run("ip", "-n", RouterNS, "-4", "route", "show", addr.String()+"/32")
	if err != nil {
		return nil, err
	}
	var hops []string
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "via" {
			hops = append(hops, f[i+1])
		}
	}
	return hops, nil
}

// bgpOverlay is the user's kustomization over deploy/overlays/bgp: the
// lab's images, pools (the BGP pool for BGPNamespace) and the router as
// the only peer.
const bgpOverlay = `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {{BASE}}
images:
  - name: ghcr.io/vip-lb/vip-ccm
    newName: {{REPO}}/vip-ccm
    newTag: {{TAG}}
  - name: ghcr.io/vip-lb/vip-agent
    newName: {{REPO}}/vip-agent
    newTag: {{TAG}}
patches:
  - target: {kind: ConfigMap, name: kubevip, namespace: kube-system}
    patch: |
      - op: replace
        path: /data
        value:
          range-global: {{POOL}}
          range-{{BGPNS}}: {{BGPPOOL}}
  - target: {kind: ConfigMap, name: vip-agent-bgp, namespace: kube-system}
    patch: |
      - op: replace
        path: /data/bgp_as
        value: "{{NODEAS}}"
      - op: replace
        path: /data/bgp_peers
        value: "{{ROUTER}}:{{ROUTERAS}}::false"
      - op: replace
        path: /data/bgp_hold_time
        value: "9"
      - op: replace
        path: /data/bgp_keepalive_interval
        value: "3"
`

// InstallVIPBGP applies deploy/overlays/bgp (through a lab kustomization
// that sets images, pools and the peer) over whatever vip install is there,
// as a user switching to BGP does, and waits for the rollout.
func (c *Cluster) InstallVIPBGP(ctx context.Context) error {
	k := expand(bgpOverlay, "{{REPO}}", ImageRepo, "{{TAG}}", ImageTag, "{{POOL}}", PoolRange,
		"{{BGPNS}}", BGPNamespace, "{{BGPPOOL}}", BGPPoolRange, "{{NODEAS}}", fmt.Sprint(NodeAS),
		"{{ROUTER}}", RouterIP, "{{ROUTERAS}}", fmt.Sprint(RouterAS))
	dir, err := c.writeKustomization("vip-kustomize-bgp", filepath.Join("deploy", "overlays", "bgp"), k)
	if err != nil {
		return err
	}
	if _, err := c.Kubectl(ctx, "apply", "-k", dir); err != nil {
		return err
	}
	return c.WaitVIP(ctx)
}
