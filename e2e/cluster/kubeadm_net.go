package cluster

// The kubeadm lab has a network of its own — namespaces kubeadmPrefix-*,
// its own bridge — so that it can run beside the process cluster (vcl-*),
// which uses the same addresses on another bridge.

// kubeadmPrefix names the kubeadm lab's namespaces and cgroups.
const kubeadmPrefix = "vka"

// The kubeadm lab's switch and client namespaces.
var (
	KubeadmSwitchNS = kubeadmPrefix + "-sw"
	KubeadmClientNS = kubeadmPrefix + "-client"
)

// buildKubeadmSwitch makes the switch namespace with its bridge; the
// gateway address leads nowhere (no other link).
func (s *State) buildKubeadmSwitch() error {
	if err := s.addNamespace(KubeadmSwitchNS); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"-n", KubeadmSwitchNS, "link", "add", bridgeName, "type", "bridge"},
		{"-n", KubeadmSwitchNS, "link", "set", bridgeName, "type", "bridge", "mcast_snooping", "0"},
		{"-n", KubeadmSwitchNS, "addr", "add", gatewayIP + "/24", "dev", bridgeName},
		{"-n", KubeadmSwitchNS, "link", "set", bridgeName, "up"},
	} {
		if _, err := run("ip", args...); err != nil {
			return err
		}
	}
	return nil
}

// addKubeadmMember creates namespace ns with eth0 at ip on the kubeadm
// lab's bridge (its switch port is named ns) and a default route to the
// gateway.
func (s *State) addKubeadmMember(ns, ip string) error {
	if err := s.addNamespace(ns); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"link", "add", ns, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"link", "set", ns, "netns", KubeadmSwitchNS},
		{"-n", KubeadmSwitchNS, "link", "set", ns, "master", bridgeName, "up"},
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

// CutKubeadmPort takes a kubeadm node's switch port down.
func CutKubeadmPort(node string) error {
	_, err := run("ip", "-n", KubeadmSwitchNS, "link", "set", node, "down")
	return err
}

// kubeadmNamespaces are the namespaces KubeadmUp makes for n nodes.
func kubeadmNamespaces(n int) []string {
	return append([]string{KubeadmSwitchNS, KubeadmClientNS}, kubeadmNodes(n)...)
}

func kubeadmNodes(n int) []string {
	var ns []string
	for i := 1; i <= n; i++ {
		ns = append(ns, KubeadmNodeName(i))
	}
	return ns
}
