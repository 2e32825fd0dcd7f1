package agentconfig

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"
)

// UPnPConfig is the UPnP part of the configuration (docs/upnp.md).
type UPnPConfig struct {
	Enabled     bool
	AllServices bool
	Lease       time.Duration
	Window      time.Duration
}

func defaultUPnPConfig() UPnPConfig {
	return UPnPConfig{Lease: time.Hour, Window: 2 * time.Second}
}

func (u *UPnPConfig) addFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&u.Enabled, "enableUPNP", u.Enabled, "Forward the ports of the Services this node announces on the network's UPnP Internet gateway (env enableUPNP); a Service opts in with kube-vip.io/forwardUPNP: \"true\". ARP mode only.")
	fs.BoolVar(&u.AllServices, "upnp-all-services", u.AllServices, "With --enableUPNP, forward every announced Service, not only the annotated ones.")
	fs.DurationVar(&u.Lease, "upnp-lease-duration", u.Lease, "Lease of each gateway port mapping, renewed at half of it; 0 asks for permanent mappings (per Service: kube-vip.io/upnp-lease-duration).")
	fs.DurationVar(&u.Window, "upnp-discovery-window", u.Window, "How long an SSDP search for the gateway collects answers.")
}

// upnpEnvFlags maps kube-vip's environment variable (and the spelling of
// its other settings) onto the flag.
var upnpEnvFlags = map[string]string{"enableUPNP": "enableUPNP", "enable_upnp": "enableUPNP"}

func (u *UPnPConfig) validate(c *Config) error {
	if !u.Enabled {
		return nil
	}
	switch {
	case c.BGP:
		return fmt.Errorf("%w: --enableUPNP (enableUPNP) works with --arp only: in BGP mode every node announces the address, and one gateway port can be forwarded for one node only", ErrConfig)
	case !c.Services:
		return fmt.Errorf("%w: --enableUPNP (enableUPNP) forwards Service ports, but --services=false (svc_enable=false)", ErrConfig)
	case u.Lease < 0:
		return fmt.Errorf("%w: --upnp-lease-duration %v is negative", ErrConfig, u.Lease)
	case u.Window <= 0:
		return fmt.Errorf("%w: --upnp-discovery-window must be positive", ErrConfig)
	}
	return nil
}
