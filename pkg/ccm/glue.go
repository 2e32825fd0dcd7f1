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

func ipamRequest(svc *v1.Service, fams []ipam.Family, static []netip.Addr) ipam.Request {
	r := ipam.Request{Key: lbsvc.Key(svc), Namespace: svc.Namespace, Ports: lbsvc.Ports(svc), Requested: static, Families: fams}
	r.SharingKey, r.ShareWith = lbsvc.SharingConsent(svc)
	return r
}

func mergePatch(v any) ([]byte, error) { return json.Marshal(v) }
