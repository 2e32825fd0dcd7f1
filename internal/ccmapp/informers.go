package ccmapp

import (
	"math/rand/v2"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/cloud-provider/app/config"

	"github.com/vip-lb/vip/internal/listwatch"
)

// reconnectFast makes every informer of vip-ccm, and every client the
// controllers build later, retry list and watch requests every
// listwatch.Interval while the API server is unreachable. Without it the
// informers fall into client-go's reflector backoff (up to 30 s plus
// jitter) and, after an API server outage, Services created once it is back
// wait that long for an address.
//
// The command builds its shared informer factory before it calls the cloud
// initialiser, so the factory is replaced here, before anything has
// registered an informer with it or started it.
func reconnectFast(c *config.CompletedConfig) error {
	c.Kubeconfig.Wrap(listwatch.Retry)
	client, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(c.Kubeconfig), "shared-informers"))
	if err != nil {
		return err
	}
	c.VersionedClient = client
	c.SharedInformers = informers.NewSharedInformerFactory(client, resyncPeriod(c.ComponentConfig.Generic.MinResyncPeriod.Duration))
	return nil
}

// resyncPeriod spreads resyncs as the command does: between min and 2×min.
func resyncPeriod(min time.Duration) time.Duration {
	return time.Duration(float64(min) * (1 + rand.Float64()))
}
