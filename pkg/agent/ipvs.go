package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/record"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// kube-proxy in IPVS mode binds every Service address (ClusterIP, external
// and LoadBalancer addresses) to the dummy interface kube-ipvs0 on every
// node. Unless ARP is strict (kube-proxy's ipvs.strictARP, i.e.
// arp_ignore=1 and arp_announce=2), every node then answers ARP for every
// LoadBalancer address and layer 2 election means nothing: clients reach
// whichever node answered last. The agent cannot fix another component's
// addresses; it tells the operator, once per state, on the Node.
const (
	// IPVSInterface is kube-proxy's IPVS dummy interface.
	IPVSInterface = "kube-ipvs0"
	// ReasonStrictARPRequired is the Node Warning: kube-ipvs0 holds a
	// LoadBalancer address and ARP is not strict.
	ReasonStrictARPRequired = "StrictARPRequired"

	ipvsCheckPeriod = 15 * time.Second
	// Values kube-proxy's strictARP sets (net.ipv4.conf.all.*).
	strictARPIgnore   = 1
	strictARPAnnounce = 2
)

// ifaceAddr is one address of one interface.
type ifaceAddr struct {
	Iface  string
	Prefix netip.Prefix
}

// ipvsFinding is a link on which this node answers ARP for LoadBalancer
// addresses it holds on kube-ipvs0: ARP requests for them arrive on Iface
// (its subnet covers them) and the effective sysctls there are loose.
type ipvsFinding struct {
	Iface       string
	Addrs       []netip.Addr
	ARPIgnore   int // max(all, Iface), as the kernel applies it
	ARPAnnounce int
}

func (f ipvsFinding) String() string {
	s := make([]string, len(f.Addrs))
	for i, a := range f.Addrs {
		s[i] = a.String()
	}
	return fmt.Sprintf("%s holds %s, so this node answers ARP for them on %s (arp_ignore=%d, arp_announce=%d)",
		IPVSInterface, strings.Join(s, ","), f.Iface, f.ARPIgnore, f.ARPAnnounce)
}

// sysctlFunc reads net.ipv4.conf.<iface>.<key> ("all" for the global one).
type sysctlFunc func(iface, key string) (int, error)

// checkIPVSARP returns the links on which addresses of kube-ipvs0 that
// isLB accepts would be answered by ARP because arp_ignore < 1 or
// arp_announce < 2. Addresses no other interface's subnet covers (e.g. BGP
// addresses off every link) draw no ARP requests and are not reported.
// IPv6 is not checked: Linux answers neighbour solicitations only for
// addresses of the interface asked on.
func checkIPVSARP(addrs []ifaceAddr, isLB func(netip.Addr) bool, sysctl sysctlFunc) ([]ipvsFinding, error) {
	var lb []netip.Addr
	for _, a := range addrs {
		ip := a.Prefix.Addr().Unmap()
		if a.Iface == IPVSInterface && ip.Is4() && isLB(ip) {
			lb = append(lb, ip)
		}
	}
	if len(lb) == 0 {
		return nil, nil
	}
	slices.SortFunc(lb, func(x, y netip.Addr) int { return x.Compare(y) })
	lb = slices.Compact(lb)
	links := map[string][]netip.Addr{}
	for _, ip := range lb {
		for _, a := range addrs {
			if a.Iface == IPVSInterface || a.Iface == "lo" || !a.Prefix.Addr().Is4() || a.Prefix.Bits() >= 32 {
				continue
			}
			if a.Prefix.Masked().Contains(ip) && !slices.Contains(links[a.Iface], ip) {
				links[a.Iface] = append(links[a.Iface], ip)
			}
		}
	}
	var out []ipvsFinding
	var errs []error
	for iface, ips := range links {
		ign, err1 := effective(sysctl, iface, "arp_ignore")
		ann, err2 := effective(sysctl, iface, "arp_announce")
		if err := errors.Join(err1, err2); err != nil {
			errs = append(errs, err)
			continue
		}
		if ign < strictARPIgnore || ann < strictARPAnnounce {
			out = append(out, ipvsFinding{Iface: iface, Addrs: ips, ARPIgnore: ign, ARPAnnounce: ann})
		}
	}
	slices.SortFunc(out, func(x, y ipvsFinding) int { return strings.Compare(x.Iface, y.Iface) })
	return out, errors.Join(errs...)
}

// effective is the value the kernel applies on iface: the larger of
// conf.all and conf.<iface> (true for arp_ignore and arp_announce).
func effective(sysctl sysctlFunc, iface, key string) (int, error) {
	all, err := sysctl("all", key)
	if err != nil {
		return 0, err
	}
	own, err := sysctl(iface, key)
	if err != nil {
		return 0, err
	}
	return max(all, own), nil
}

// procSysctl reads /proc/sys/net/ipv4/conf/<iface>/<key> of the caller's
// network namespace (the node's: the agent runs with hostNetwork).
func procSysctl(iface, key string) (int, error) {
	p := filepath.Join("/proc/sys/net/ipv4/conf", iface, key)
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", p, err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", p, err)
	}
	return v, nil
}

// hostAddrs lists every interface's addresses.
func hostAddrs() ([]ifaceAddr, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	var out []ifaceAddr
	for _, ifc := range ifs {
		as, err := ifc.Addrs()
		if err != nil {
			continue // gone meanwhile
		}
		for _, a := range as {
			if n, ok := a.(*net.IPNet); ok {
				ip, ok := netip.AddrFromSlice(n.IP)
				ones, _ := n.Mask.Size()
				if ok {
					out = append(out, ifaceAddr{Iface: ifc.Name, Prefix: netip.PrefixFrom(ip.Unmap(), ones)})
				}
			}
		}
	}
	return out, nil
}

// ipvsReporter tells the operator about loose ARP next to kube-ipvs0: one
// log line and one Warning Event on the Node when the state appears or
// changes, one line when it is gone.
type ipvsReporter struct {
	log  logr.Logger
	rec  record.EventRecorder
	node string
	last string // the findings last reported ("" = none)
}

func (r *ipvsReporter) report(found []ipvsFinding) {
	if len(found) == 0 {
		if r.last != "" {
			r.log.Info("ARP is strict now next to " + IPVSInterface)
		}
		r.last = ""
		return
	}
	// Report again only when the links or the values change, not for each
	// new address.
	var key, what []string
	for _, f := range found {
		key = append(key, fmt.Sprintf("%s:%d:%d", f.Iface, f.ARPIgnore, f.ARPAnnounce))
		what = append(what, f.String())
	}
	k := strings.Join(key, ";")
	if k == r.last {
		return
	}
	r.last = k
	msg := fmt.Sprintf("kube-proxy IPVS mode without strict ARP: %s; every node with %s answers ARP for LoadBalancer addresses, "+
		"not only the one vip elected. Set net.ipv4.conf.all.arp_ignore=%d and net.ipv4.conf.all.arp_announce=%d on every node "+
		"(kube-proxy: ipvs.strictARP: true)", strings.Join(what, "; "), IPVSInterface, strictARPIgnore, strictARPAnnounce)
	r.log.Error(nil, msg, "interface", IPVSInterface)
	node := lbsvc.NodeRef(r.node)
	r.rec.Event(node, v1.EventTypeWarning, ReasonStrictARPRequired, msg)
}

// watchIPVS checks every ipvsCheckPeriod whether kube-ipvs0 holds a
// LoadBalancer address (any in a Service's status, which includes those
// this node announces) while ARP is loose, until ctx ends.
func (a *Agent) watchIPVS(ctx context.Context) {
	r := &ipvsReporter{log: a.log.WithValues("check", "ipvs-arp"), rec: a.rec, node: a.o.NodeName}
	// Every address this node announces is in a Service's status, so the
	// index of status addresses covers "announced here" and "any LB address".
	isLB := func(ip netip.Addr) bool {
		objs, err := a.svcIndex.ByIndex(ingressIndex, ip.String())
		return err == nil && len(objs) > 0
	}
	wait.UntilWithContext(ctx, func(context.Context) {
		addrs, err := hostAddrs()
		if err != nil {
			r.log.V(1).Info("cannot list addresses", "err", err)
			return
		}
		found, err := checkIPVSARP(addrs, isLB, procSysctl)
		if err != nil {
			r.log.V(1).Info("cannot read ARP sysctls", "err", err)
			if len(found) == 0 {
				return // unknown is not "strict now"
			}
		}
		r.report(found)
	}, ipvsCheckPeriod)
}
