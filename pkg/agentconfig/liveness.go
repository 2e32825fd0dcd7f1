package agentconfig

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/vip-lb/vip/pkg/liveness"
)

// Liveness modes (--liveness).
const (
	LivenessLease = "lease"
	LivenessLink  = "link"
)

// LivenessConfig is how ARP mode finds dead nodes (docs/liveness.md).
type LivenessConfig struct {
	Mode              string
	KeyFile, Address  string
	Port              int
	Interval, Timeout time.Duration
}

func defaultLivenessConfig() LivenessConfig {
	return LivenessConfig{Mode: LivenessLease, Port: liveness.DefaultPort,
		Interval: liveness.DefaultInterval, Timeout: liveness.DefaultTimeout}
}

func (l *LivenessConfig) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&l.Mode, "liveness", l.Mode, `ARP mode: how dead nodes are found. "lease": every agent renews a heartbeat Lease each --heartbeat-period and watches everyone's (API writes grow with the node count); "link": authenticated UDP heartbeats between neighbours on the announcing interface, the heartbeat Lease renewed only every 10s (docs/liveness.md). Switch every agent together.`)
	fs.StringVar(&l.KeyFile, "link-key-file", l.KeyFile, "--liveness=link: file holding the cluster's heartbeat key (at least 16 bytes; mount it from a Secret).")
	fs.StringVar(&l.Address, "link-address", l.Address, "--liveness=link: this node's address for heartbeats (default: the first address of --services-interface, else --interface, else --node-address).")
	fs.IntVar(&l.Port, "link-port", l.Port, "--liveness=link: UDP port of the heartbeats.")
	fs.DurationVar(&l.Interval, "link-interval", l.Interval, "--liveness=link: time between heartbeats.")
	fs.DurationVar(&l.Timeout, "link-timeout", l.Timeout, "--liveness=link: silence after which a neighbour is suspected; it is dead a third of this later unless another member still hears it (at least 3 intervals).")
}

func (l *LivenessConfig) validate() error {
	switch {
	case l.Mode == LivenessLease:
		return nil
	case l.Mode != LivenessLink:
		return fmt.Errorf("%w: --liveness=%q: want %q or %q", ErrConfig, l.Mode, LivenessLease, LivenessLink)
	case l.KeyFile == "":
		return fmt.Errorf("%w: --liveness=link needs --link-key-file (the heartbeat key, from a Secret)", ErrConfig)
	case l.Port <= 0 || l.Port > 65535:
		return fmt.Errorf("%w: --link-port %d", ErrConfig, l.Port)
	case l.Interval <= 0 || l.Timeout < 3*l.Interval:
		return fmt.Errorf("%w: --link-timeout (%v) must be at least 3 times --link-interval (%v)", ErrConfig, l.Timeout, l.Interval)
	}
	return nil
}
