package bgpnode

import (
	"context"
	"net/netip"
	"strings"
	"time"

	"github.com/go-logr/logr"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// Node Event reasons of BGP mode.
const (
	ReasonSessionDown   = "BGPSessionDown"
	ReasonSessionUp     = "BGPSessionEstablished"
	ReasonConfigInvalid = "BGPConfigInvalid"
	ReasonStopped       = "BGPStopped"
	ReasonNoPeers       = "BGPNoPeerSelected"
	ReasonPasswordPlain = "BGPPasswordNotSecret"
)

// Ref is the object Node Events are attached to.
func Ref(node string) *v1.ObjectReference { return lbsvc.NodeRef(node) }

// WarnPlainPasswords says once, in the log and as a Warning Event on the
// Node, that passwords arrive in plain text, naming where (never the value).
func WarnPlainPasswords(log logr.Logger, rec record.EventRecorder, node string, sources []string) {
	if len(sources) == 0 {
		return
	}
	where := strings.Join(sources, ", ")
	log.Info("BGP passwords are given in plain text, readable by anyone who may read the Pod or Node; move them to a Secret mounted at --bgp-password-file", "sources", sources)
	rec.Eventf(Ref(node), v1.EventTypeWarning, ReasonPasswordPlain,
		"BGP passwords arrive in plain text through %s; move them to a Secret mounted at --bgp-password-file (see docs/bgp.md)", where)
}

// SessionEvent records a session going up (Normal) or down (Warning) on
// the Node.
func SessionEvent(rec record.EventRecorder, node string, peer netip.Addr, up bool, state string) {
	if up {
		rec.Eventf(Ref(node), v1.EventTypeNormal, ReasonSessionUp, "BGP session with %s established", peer)
		return
	}
	rec.Eventf(Ref(node), v1.EventTypeWarning, ReasonSessionDown, "BGP session with %s went down (now %s); its routes from %s are withdrawn", peer, state, node)
}

// StopEvent records the stop on the Node synchronously: an
// EventRecorder's asynchronous sink would lose it when the process exits.
func StopEvent(client kubernetes.Interface, nodeName, msg string, log logr.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	now := metav1.Now()
	ev := &v1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: nodeName + ".", Namespace: metav1.NamespaceDefault},
		InvolvedObject: *Ref(nodeName),
		Reason:         ReasonStopped, Message: msg, Type: v1.EventTypeNormal,
		Source:         v1.EventSource{Component: "vip-agent", Host: nodeName},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	if _, err := client.CoreV1().Events(metav1.NamespaceDefault).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		log.V(1).Info("could not record the stop on the Node", "err", err.Error())
	}
}
