package ccm

import (
	"fmt"
	"sort"
	"strings"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/vip-lb/vip/pkg/compat"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// ReasonUnsupportedAnnotation is the Warning on a Service that carries a
// kube-vip annotation vip does not provide.
const ReasonUnsupportedAnnotation = "UnsupportedAnnotation"

// unsupportedWarner answers kube-vip annotations vip does not provide with
// one UnsupportedAnnotation Warning per Service change: the set of such
// annotations (with their values) is remembered per Service, and a Warning
// is written only when it changes.
type unsupportedWarner struct {
	mu   sync.Mutex
	last map[string]string // service key -> the annotations last warned about
}

// unsupportedAnnotations returns the kube-vip annotations on svc that vip
// answers with a Warning, sorted, each with its reason.
func unsupportedAnnotations(svc *v1.Service) []string {
	rules := compat.UnsupportedAnnotations()
	var out []string
	for k := range svc.Annotations {
		for name, why := range rules {
			if k == name || (strings.HasSuffix(name, "*") && strings.HasPrefix(k, strings.TrimSuffix(name, "*"))) {
				out = append(out, k+" ("+why+")")
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// check records a Warning on svc when its unsupported annotations changed.
func (w *unsupportedWarner) check(rec record.EventRecorder, svc *v1.Service) {
	found := unsupportedAnnotations(svc)
	sig := ""
	for _, f := range found {
		name, _, _ := strings.Cut(f, " ")
		sig += name + "=" + svc.Annotations[name] + "\n"
	}
	key := lbsvc.Key(svc)
	w.mu.Lock()
	if w.last == nil {
		w.last = map[string]string{}
	}
	same := w.last[key] == sig
	if sig == "" {
		delete(w.last, key)
	} else {
		w.last[key] = sig
	}
	w.mu.Unlock()
	if same || len(found) == 0 {
		return
	}
	rec.Event(svc, v1.EventTypeWarning, ReasonUnsupportedAnnotation,
		fmt.Sprintf("ignored kube-vip annotation(s): %s; the Service is served without them", strings.Join(found, "; ")))
}

// forget drops a deleted Service.
func (w *unsupportedWarner) forget(key string) {
	w.mu.Lock()
	delete(w.last, key)
	w.mu.Unlock()
}
