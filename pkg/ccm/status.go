package ccm

import (
	"context"
	"fmt"
	"reflect"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// writeStatus is vip-ccm's one writer of Service status, and only the
// service controller calls it: a change no Service update brings (an
// address quarantined or given back when its quarantine ends, a DHCP lease
// recorded by the agent) queues the Service for the controller instead.
//
// It writes nothing when svc already carries st, and a merge patch of the
// ingress list otherwise; an empty st clears the list. A Service gone
// meanwhile is not an error.
func (c *ServiceController) writeStatus(ctx context.Context, svc *v1.Service, st *v1.LoadBalancerStatus) error {
	if reflect.DeepEqual(svc.Status.LoadBalancer, *st) || (len(svc.Status.LoadBalancer.Ingress) == 0 && len(st.Ingress) == 0) {
		return nil
	}
	var ingress any = st.Ingress
	if len(st.Ingress) == 0 {
		// A merge patch with an empty object changes nothing: clear the list.
		ingress = nil
	}
	patch, err := mergePatch(map[string]any{"status": map[string]any{"loadBalancer": map[string]any{"ingress": ingress}}})
	if err != nil {
		return err
	}
	_, err = c.client.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("writing the status of %s: %w", lbsvc.Key(svc), err)
	}
	return nil
}
