package ccm

import (
	"context"
	"encoding/json"
	"net/netip"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/vip-lb/vip/pkg/ipam"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

type metav1ListOptions = metav1.ListOptions

func labelsEverything() labels.Selector { return labels.Everything() }

// contextFor turns a stop channel into a context.
func contextFor(stop <-chan struct{}) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-stop
		cancel()
	}()
	return ctx
}

func ipamPorts(svc *v1.Service) []ipam.Port {
	ps := lbsvc.Ports(svc)
	out := make([]ipam.Port, len(ps))
	for i, p := range ps {
		out[i] = ipam.Port{Proto: p.Proto, Port: p.Port}
	}
	return out
}

func ipamRequest(svc *v1.Service, fams []lbsvc.Family, static []netip.Addr) ipam.Request {
	r := ipam.Request{Key: lbsvc.Key(svc), Namespace: svc.Namespace, Ports: ipamPorts(svc), Requested: static}
	r.SharingKey, r.ShareWith = lbsvc.SharingConsent(svc)
	for _, f := range fams {
		if f == lbsvc.IPv6 {
			r.Families = append(r.Families, ipam.IPv6)
		} else {
			r.Families = append(r.Families, ipam.IPv4)
		}
	}
	return r
}

func mergePatch(v any) ([]byte, error) { return json.Marshal(v) }
