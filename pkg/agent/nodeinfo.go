package agent

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	vipaddr "github.com/vip-lb/vip/pkg/announce/addr"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// NodeInfo is what an agent publishes about its node on its heartbeat
// Lease, for vip-ccm's never-assignable set.
type NodeInfo struct {
	Addresses []netip.Addr // global unicast interface addresses
	Gateways  []netip.Addr // default gateways
	MACs      []string     // hardware addresses of its Ethernet interfaces
}

// Annotations renders the info as heartbeat annotations (comma lists).
func (n NodeInfo) Annotations() map[string]string {
	return map[string]string{
		lbsvc.AnnotationNodeAddresses: joinAddrs(n.Addresses),
		lbsvc.AnnotationNodeGateways:  joinAddrs(n.Gateways),
		lbsvc.AnnotationNodeMACs:      strings.Join(n.MACs, ","),
	}
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

// ignoredLink tells links whose addresses are not the node's own: the
// DHCP macvlans (vipd*, their addresses are Service addresses) and
// kube-proxy's IPVS dummy (it carries every Service address).
func ignoredLink(name string) bool {
	return strings.HasPrefix(name, "vipd") || name == "kube-ipvs0"
}

// ReadNodeInfo lists this node's global unicast addresses (minus exclude:
// the virtual IPs vip put there) and its default gateways.
func ReadNodeInfo(exclude func(netip.Addr) bool) (NodeInfo, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return NodeInfo{}, err
	}
	var info NodeInfo
	for _, l := range links {
		if mac := l.Attrs().HardwareAddr; len(mac) == 6 && !slices.Equal(mac, make(net.HardwareAddr, 6)) {
			info.MACs = append(info.MACs, mac.String())
		}
		if ignoredLink(l.Attrs().Name) {
			continue
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if !ip.IsGlobalUnicast() || vipBound(a) || (exclude != nil && exclude(ip)) {
				continue
			}
			info.Addresses = append(info.Addresses, ip)
		}
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return NodeInfo{}, err
	}
	for _, r := range routes {
		if !isDefault(r.Dst) || r.Gw == nil {
			if isDefault(r.Dst) {
				for _, nh := range r.MultiPath {
					if gw, ok := netip.AddrFromSlice(nh.Gw); ok && nh.Gw != nil {
						info.Gateways = append(info.Gateways, gw.Unmap())
					}
				}
			}
			continue
		}
		if gw, ok := netip.AddrFromSlice(r.Gw); ok {
			info.Gateways = append(info.Gateways, gw.Unmap())
		}
	}
	info.Addresses = sortUnique(info.Addresses)
	info.Gateways = sortUnique(info.Gateways)
	slices.Sort(info.MACs)
	info.MACs = slices.Compact(info.MACs)
	return info, nil
}

// vipBound tells the addresses vip binds (announce/addr): IPv4 with the
// "<iface>:vip" label, IPv6 without DAD nor prefix route and deprecated.
func vipBound(a netlink.Addr) bool {
	if strings.HasSuffix(a.Label, vipaddr.LabelSuffix) {
		return true
	}
	const f = unix.IFA_F_NODAD | unix.IFA_F_NOPREFIXROUTE
	return a.IP.To4() == nil && a.Flags&f == f && a.PreferedLft == 0
}

func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0
}

func sortUnique(as []netip.Addr) []netip.Addr {
	slices.SortFunc(as, netip.Addr.Compare)
	return slices.Compact(as)
}

// PublishNodeInfo reads the node's addresses and gateways every interval
// and hands them to publish when they changed (publish puts them on the
// heartbeat, which is renewed anyway). It returns when ctx ends.
func PublishNodeInfo(ctx context.Context, interval time.Duration, log logr.Logger, exclude func(netip.Addr) bool, publish func(map[string]string)) {
	var last string
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		info, err := ReadNodeInfo(exclude)
		if err != nil {
			log.V(1).Info("reading the node's addresses", "err", err)
		} else if ann := info.Annotations(); joinInfo(ann) != last {
			last = joinInfo(ann)
			publish(ann)
			log.Info("publishing the node's addresses on its heartbeat", "addresses", ann[lbsvc.AnnotationNodeAddresses],
				"gateways", ann[lbsvc.AnnotationNodeGateways], "macs", ann[lbsvc.AnnotationNodeMACs])
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// joinInfo is the published node info as one comparable string.
func joinInfo(ann map[string]string) string {
	return ann[lbsvc.AnnotationNodeAddresses] + " " + ann[lbsvc.AnnotationNodeGateways] + " " + ann[lbsvc.AnnotationNodeMACs]
}
