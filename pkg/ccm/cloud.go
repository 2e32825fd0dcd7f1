package ccm

import (
	"fmt"
	"io"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/klog/v2"
)

// Cloud is vip's cloudprovider.Interface.
type Cloud struct {
	opts Options
	reg  prometheus.Registerer
	lb   *LoadBalancer
}

var (
	_ cloudprovider.Interface    = (*Cloud)(nil)
	_ cloudprovider.InformerUser = (*Cloud)(nil)
)

// New returns a Cloud. reg receives vip's metrics (nil: not registered).
func New(opts Options, reg prometheus.Registerer) (*Cloud, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("invalid options: %w", err)
	}
	return &Cloud{opts: opts, reg: reg, lb: newLoadBalancer(opts, reg)}, nil
}

// Initialize is called by the cloud-controller-manager once it leads; it
// gives vip its API client and starts the pools ConfigMap informer.
func (c *Cloud) Initialize(cb cloudprovider.ControllerClientBuilder, stop <-chan struct{}) {
	client := cb.ClientOrDie("vip-ccm")
	c.lb.start(client, newRecorder(client, stop), stop)
}

// SetInformers hands vip the manager's shared informers (Services, Nodes).
func (c *Cloud) SetInformers(f informers.SharedInformerFactory) { c.lb.setInformers(f) }

// LoadBalancer returns the address manager.
func (c *Cloud) LoadBalancer() (cloudprovider.LoadBalancer, bool) { return c.lb, true }

// Instances is not implemented; InstancesV2 is.
func (c *Cloud) Instances() (cloudprovider.Instances, bool) { return nil, false }

// InstancesV2 initialises nodes registered with --cloud-provider=external.
func (c *Cloud) InstancesV2() (cloudprovider.InstancesV2, bool) { return instances{}, true }

// Zones is not implemented.
func (c *Cloud) Zones() (cloudprovider.Zones, bool) { return nil, false }

// Clusters is not implemented.
func (c *Cloud) Clusters() (cloudprovider.Clusters, bool) { return nil, false }

// Routes is not implemented.
func (c *Cloud) Routes() (cloudprovider.Routes, bool) { return nil, false }

// ProviderName returns "vip".
func (c *Cloud) ProviderName() string { return ProviderName }

// HasClusterID reports true: vip has no notion of cluster tagging.
func (c *Cloud) HasClusterID() bool { return true }

// HasSynced reports whether the informers vip's provider reads (Services,
// Nodes, the pools ConfigMap, the agent's Leases) have synced; false until
// Initialize and SetInformers ran.
func (c *Cloud) HasSynced() bool { return c.lb.hasSynced() }

// Allocator exposes the load balancer for vip's service controller.
func (c *Cloud) Allocator() *LoadBalancer { return c.lb }

// ReadConfig accepts no cloud config file; vip is configured by flags and the
// pools ConfigMap.
func ReadConfig(r io.Reader) error {
	if r == nil {
		return nil
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if len(b) > 0 {
		return fmt.Errorf("vip takes no --cloud-config file; use flags and the pools ConfigMap")
	}
	return nil
}

func newRecorder(client kubernetes.Interface, stop <-chan struct{}) record.EventRecorder {
	b := record.NewBroadcaster(record.WithContext(contextFor(stop)))
	b.StartStructuredLogging(klog.Level(2))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	return b.NewRecorder(scheme.Scheme, v1.EventSource{Component: "vip-ccm"})
}

// ReadConfigFile checks that no cloud config file, or an empty one, is given.
func ReadConfigFile(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening --cloud-config: %w", err)
	}
	defer f.Close()
	return ReadConfig(f)
}
