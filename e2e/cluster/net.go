package cluster

import (
	"fmt"
	"os"
	"strings"
)

// addNamespace creates netns name and records it in the state once it is
// made (so Down undoes a failure halfway), never before: a namespace that
// exists already is another lab's or a leftover, and is refused (ErrTaken)
// and left alone.
func (s *State) addNamespace(name string) error {
	if err := checkFree([]claim{namespaceClaim(name)}, pathExists); err != nil {
		return err
	}
	// ip netns add fails on a name made in between: nothing recorded then.
	if _, err := run("ip", "netns", "add", name); err != nil {
		return err
	}
	s.mu.Lock()
	s.Namespaces = append(s.Namespaces, name)
	s.mu.Unlock()
	if err := s.save(); err != nil {
		return err
	}
	_, err := run("ip", "-n", name, "link", "set", "lo", "up")
	return err
}

// buildSwitch makes the switch namespace with the lab bridge. Its gateway
// address is the default route of the members and leads nowhere: the switch
// namespace has no other link.
func (s *State) buildSwitch() error {
	if err := s.addNamespace(SwitchNS); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"-n", SwitchNS, "link", "add", bridgeName, "type", "bridge"},
		{"-n", SwitchNS, "link", "set", bridgeName, "type", "bridge", "mcast_snooping", "0"},
		{"-n", SwitchNS, "addr", "add", gatewayIP + "/24", "dev", bridgeName},
		{"-n", SwitchNS, "link", "set", bridgeName, "up"},
	} {
		if _, err := run("ip", args...); err != nil {
			return err
		}
	}
	return nil
}

// addMember creates namespace ns with eth0 at ip on the bridge (its switch
// port is named ns too) and a default route to the gateway.
func (s *State) addMember(ns, ip string) error {
	if err := s.addNamespace(ns); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"link", "add", ns, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"link", "set", ns, "netns", SwitchNS},
		{"-n", SwitchNS, "link", "set", ns, "master", bridgeName, "up"},
		{"-n", ns, "addr", "add", ip + "/24", "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "route", "add", "default", "via", gatewayIP},
	} {
		if _, err := run("ip", args...); err != nil {
			return err
		}
	}
	return nil
}

// nodeNetwork sets a node namespace up for kubelet, kube-proxy and the CNI
// bridge: forwarding, bridge netfilter, and a route to every other node's
// pod range via that node (a static stand-in for a routing CNI).
func (s *State) nodeNetwork(i, nodes int) error {
	ns := NodeName(i)
	for _, kv := range []string{"net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1",
		"net.ipv4.conf.all.arp_ignore=0"} {
		if _, err := runIn(ns, "sysctl", "-qw", kv); err != nil {
			return err
		}
	}
	if _, err := runIn(ns, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", ClusterCIDR, "!", "-d", ClusterCIDR,
		"-m", "comment", "--comment", "vip lab: pods leaving the pod range", "-j", "MASQUERADE"); err != nil {
		return err
	}
	for j := 1; j <= nodes; j++ {
		if j == i {
			continue
		}
		if _, err := run("ip", "-n", ns, "route", "replace", PodCIDR(j), "via", NodeIP(j)); err != nil {
			return err
		}
	}
	return nil
}

// CutPort takes node's switch port down (the node is cut off the lab).
func CutPort(node string) error {
	_, err := run("ip", "-n", SwitchNS, "link", "set", node, "down")
	return err
}

// RestorePort brings node's switch port back up.
func RestorePort(node string) error {
	_, err := run("ip", "-n", SwitchNS, "link", "set", node, "up")
	return err
}

// deleteNamespaces removes the recorded namespaces (the switch last, its
// veths go with the members).
func (s *State) deleteNamespaces() error {
	var errs []string
	ns := append([]string(nil), s.Namespaces...)
	for i := len(ns) - 1; i >= 0; i-- {
		if _, err := os.Stat(netnsPath(ns[i])); err != nil {
			continue
		}
		if _, err := run("ip", "netns", "delete", ns[i]); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("delete namespaces: %s", strings.Join(errs, "; "))
	}
	return nil
}

// addExternal creates the ExtNS client: on the bridge with ExternalIP, the
// lab's subnet on-link, and every given member routing ExternalIP's subnet
// on-link back.
func (s *State) addExternal(members []string) error {
	if err := s.addNamespace(ExtNS); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"link", "add", ExtNS, "type", "veth", "peer", "name", "eth0", "netns", ExtNS},
		{"link", "set", ExtNS, "netns", SwitchNS},
		{"-n", SwitchNS, "link", "set", ExtNS, "master", bridgeName, "up"},
		{"-n", ExtNS, "addr", "add", ExternalIP + "/24", "dev", "eth0"},
		{"-n", ExtNS, "link", "set", "eth0", "up"},
		{"-n", ExtNS, "route", "add", Subnet, "dev", "eth0"},
	} {
		if _, err := run("ip", args...); err != nil {
			return err
		}
	}
	for _, m := range members {
		if _, err := run("ip", "-n", m, "route", "add", externalSubnet, "dev", "eth0"); err != nil {
			return err
		}
	}
	return nil
}
