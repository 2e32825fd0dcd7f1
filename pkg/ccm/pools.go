package ccm

import (
	"fmt"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/klog/v2"

	"github.com/vip-lb/vip/pkg/ipam"
)

// poolState remembers, per ConfigMap key, the last value that parsed
// cleanly, so an edit that breaks a key keeps the previous pools of that key
// in force instead of dropping them.
type poolState struct {
	present  bool
	lastData map[string]string
	lastGood map[string]string
	errs     map[string]string // key -> joined error text of its current value
}

func newPoolState() *poolState {
	return &poolState{lastGood: map[string]string{}, errs: map[string]string{}}
}

// effective returns the data to parse: clean keys as they are, broken keys
// replaced by their last clean value if there is one.
func (p *poolState) update(data map[string]string) (map[string]string, []error) {
	eff := make(map[string]string, len(data))
	var all []error
	p.errs = map[string]string{}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := data[k]
		_, errs := ipam.ParseConfig(map[string]string{k: v})
		if len(errs) == 0 {
			eff[k] = v
			p.lastGood[k] = v
			continue
		}
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = e.Error()
		}
		p.errs[k] = strings.Join(msgs, "; ")
		all = append(all, errs...)
		if good, ok := p.lastGood[k]; ok {
			eff[k] = good
		} else {
			eff[k] = v // the parser keeps the good entries of a partly bad value
		}
	}
	for k := range p.lastGood {
		if _, ok := data[k]; !ok {
			delete(p.lastGood, k)
		}
	}
	return eff, all
}

// errorsFor returns the problems of the keys that serve namespace ns.
func (p *poolState) errorsFor(ns string) string {
	var out []string
	for k, e := range p.errs {
		if strings.HasSuffix(k, "-"+ns) || strings.HasSuffix(k, "-global") {
			out = append(out, e)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

func (lb *LoadBalancer) onConfigMap(o any) {
	cm, ok := o.(*v1.ConfigMap)
	if !ok {
		return
	}
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if lb.pools.present && equality.Semantic.DeepEqual(lb.pools.lastData, cm.Data) {
		return
	}
	eff, errs := lb.pools.update(cm.Data)
	cfg, _ := ipam.ParseConfig(eff)
	lb.alloc.SetConfig(cfg)
	lb.cfg = cfg
	lb.pools.present = true
	lb.pools.lastData = cm.Data
	lb.metrics.configErrors.Set(float64(len(errs)))
	lb.metrics.setPools(cfg)
	for _, err := range errs {
		klog.InfoS("invalid pool entry ignored; the last good value of its key stays in force", "configmap", klog.KObj(cm), "err", err)
	}
	if cfg.Legacy() && !lb.legacyWarned {
		lb.legacyWarned = true
		klog.InfoS("pools ConfigMap has no "+ipam.KeyAllowStaticOutsidePools+" key: any namespace may request any address that no other namespace's pool holds (kube-vip's behaviour)",
			"configmap", klog.KObj(cm))
		lb.recorder.Event(cm, v1.EventTypeWarning, ReasonStaticUnrestricted, legacyMessage)
	}
	if len(errs) > 0 {
		lb.recorder.Event(cm, v1.EventTypeWarning, ReasonPoolConfigInvalid,
			fmt.Sprintf("%d invalid entries ignored (other entries still serve): %s", len(errs), truncate(joinErrs(errs), 900)))
	}
}

func (lb *LoadBalancer) onConfigMapDeleted() {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	// Keep the last pools: deleting the ConfigMap must not change or free
	// anything already assigned, and new Services keep being served from
	// what was known until a new ConfigMap appears.
	klog.InfoS("pools ConfigMap deleted; keeping the last known pools", "configmap", lb.opts.ConfigMapNamespace+"/"+lb.opts.ConfigMapName)
}

// legacyMessage is the Warning given once on a pools ConfigMap without
// allow-static-outside-pools.
const legacyMessage = ipam.KeyAllowStaticOutsidePools + ` is not set: any namespace may request any address ` +
	`(annotation kube-vip.io/loadbalancerIPs or spec.loadBalancerIP) that no other namespace's pool holds, ` +
	`and 0.0.0.0 (DHCP), as with kube-vip. Set it to "false" (the default of new vip installs) and trust single ` +
	`namespaces with ` + ipam.KeyPrefixAllowStaticOutsidePools + `<namespace> and ` + ipam.KeyPrefixAllowDHCP + `<namespace>`

func joinErrs(errs []error) string {
	s := make([]string, len(errs))
	for i, e := range errs {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
