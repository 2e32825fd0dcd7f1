package agent

import (
	"fmt"
	"sync"
	"sync/atomic"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/vip-lb/vip/internal/listwatch"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

// ReasonMissingPermission is the Warning on this node's Node when the
// agent's ServiceAccount lacks a rule it needs (kube-vip's own RBAC, for
// example, has no configmaps or endpointslices rule).
const ReasonMissingPermission = "MissingPermission"

// rbacFile is the install file that grants the agent's rules.
const rbacFile = "deploy/agent/rbac.yaml"

// permissionWatch reports a forbidden list/watch once per resource: one log
// line naming the rule and the file that grants it, and one Warning Event
// on this node's Node. An optional resource that is forbidden counts as
// synced (and empty), so the agent does not wait for it forever.
type permissionWatch struct {
	a         *Agent
	mu        sync.Mutex
	forbidden map[string]*atomic.Bool
}

func newPermissionWatch(a *Agent) *permissionWatch {
	return &permissionWatch{a: a, forbidden: map[string]*atomic.Bool{}}
}

// rule describes the RBAC rule a resource needs, in the words of the file.
type rule struct {
	resource, group, verbs, grantedBy, without string
	optional                                   bool
}

// rules are the agent's reads, and what is lost without each.
var rules = map[string]rule{
	"services": {resource: "services", verbs: "list, watch", grantedBy: "ClusterRole vip-agent",
		without: "no Service can be served by this node"},
	"endpointslices": {resource: "endpointslices", group: "discovery.k8s.io", verbs: "list, watch", grantedBy: "ClusterRole vip-agent",
		without: "this node cannot tell which Services have ready endpoints and serves none"},
	"nodes": {resource: "nodes", verbs: "list, watch", grantedBy: "ClusterRole vip-agent",
		without: "this node cannot see excluded nodes and serves no Service"},
	"configmaps": {resource: "configmaps", verbs: "get, list, watch", grantedBy: "Role vip-agent-pools (namespace of the pools ConfigMap)",
		without: "the pools ConfigMap's interface-* keys are not read (the default interface is used)", optional: true},
}

// track wraps inf: its watch errors are checked for a missing permission,
// and the returned function is its HasSynced, also true for an optional
// resource that is forbidden.
func (p *permissionWatch) track(name string, inf cache.SharedIndexInformer) cache.InformerSynced {
	r := rules[name]
	flag := listwatch.OnForbidden(inf, func(err error) { p.report(name, r, err) })
	p.mu.Lock()
	p.forbidden[name] = flag
	p.mu.Unlock()
	return func() bool {
		return inf.HasSynced() || (r.optional && flag.Load())
	}
}

// Forbidden reports whether listing the resource was refused.
func (p *permissionWatch) Forbidden(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.forbidden[name]
	return f != nil && f.Load()
}

// report says once (listwatch.OnForbidden calls it on the first refusal)
// what is missing.
func (p *permissionWatch) report(name string, r rule, err error) {
	group := r.group
	if group == "" {
		group = `""`
	}
	msg := fmt.Sprintf("missing RBAC rule: apiGroups [%s] resources [%s] verbs [%s] for this agent's ServiceAccount (granted by %s in %s): %s",
		group, r.resource, r.verbs, r.grantedBy, rbacFile, r.without)
	p.a.log.Error(err, msg, "resource", name)
	if r.optional && name == "configmaps" {
		p.a.setInterfaces(nil)
	}
	node := lbsvc.NodeRef(p.a.o.NodeName)
	p.a.rec.Event(node, v1.EventTypeWarning, ReasonMissingPermission, msg)
}
