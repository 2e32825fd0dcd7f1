package ccm

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

// ProviderName is the cloud provider name vip-ccm registers under.
const ProviderName = "vip"

// Options configure the cloud provider.
type Options struct {
	// ConfigMapName and ConfigMapNamespace locate the pools ConfigMap
	// (kube-vip's defaults: kubevip in kube-system).
	ConfigMapName      string
	ConfigMapNamespace string
	// Class says which loadBalancerClass values are served.
	Class lbsvc.ClassRule
	// ControlPlaneVIPs are never handed to a Service.
	ControlPlaneVIPs []netip.Addr
	// RetryAfter is the fixed retry delay when no address can be given yet.
	RetryAfter time.Duration
	// AgentNamespace is the namespace of vip-agent's Leases (heartbeats,
	// control-plane lock, conflict and DHCP records); vip-ccm reads Leases
	// there only.
	AgentNamespace string
	// ConflictQuarantine is how long an address some other host answered
	// for (a conflict record) is refused and kept out of status.
	ConflictQuarantine time.Duration
}

// DefaultOptions returns kube-vip compatible defaults.
func DefaultOptions() Options {
	return Options{
		ConfigMapName:      "kubevip",
		ConfigMapNamespace: "kube-system",
		Class:              lbsvc.ClassRule{},
		RetryAfter:         10 * time.Second,
		AgentNamespace:     "kube-system",
		ConflictQuarantine: 5 * time.Minute,
	}
}

// Validate checks the options.
func (o Options) Validate() error {
	if o.ConfigMapName == "" || o.ConfigMapNamespace == "" {
		return fmt.Errorf("pools ConfigMap name and namespace must not be empty")
	}
	if o.Class.Only && o.Class.Name == "" {
		return fmt.Errorf("serving only a loadBalancerClass needs the class name")
	}
	if o.AgentNamespace == "" {
		return fmt.Errorf("agent namespace must not be empty")
	}
	if o.ConflictQuarantine <= 0 {
		return fmt.Errorf("conflict quarantine must be positive, got %v", o.ConflictQuarantine)
	}
	if o.RetryAfter <= 0 {
		return fmt.Errorf("retry delay must be positive, got %v", o.RetryAfter)
	}
	return nil
}
