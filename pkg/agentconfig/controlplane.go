package agentconfig

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/vip-lb/vip/pkg/controlplane"
)

// ControlPlaneConfig is the control-plane part of the command line and environment.
type ControlPlaneConfig struct {
	Address        string
	Port           int
	CIDR           string
	LeaseName      string
	LocalAPIServer string
	ResolvePeriod  time.Duration
	ProbePeriod    time.Duration
	ProbeTimeout   time.Duration
	DDNS           bool
}

func defaultCPConfig() ControlPlaneConfig {
	return ControlPlaneConfig{
		Port: 6443, LeaseName: controlplane.DefaultLeaseName, ResolvePeriod: controlplane.DefaultResolvePeriod,
		ProbePeriod: controlplane.DefaultProbePeriod, ProbeTimeout: controlplane.DefaultProbeTimeout,
	}
}

// cpEnvFlags maps kube-vip's control-plane environment variables onto flags.
var cpEnvFlags = map[string]string{
	"address": "address", "vip_address": "address", "port": "port", "vip_cidr": "vip-cidr",
	"vip_leasename": "lease-name", "kubernetes_addr": "local-apiserver", "vip_ddns": "ddns",
}

func (p *ControlPlaneConfig) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&p.Address, "address", p.Address, "Control-plane VIP with --controlplane: an IP address or a DNS name, re-resolved every --address-refresh (env address, vip_address).")
	fs.IntVar(&p.Port, "port", p.Port, "API server port (env port); the local API server is https://127.0.0.1:PORT unless --local-apiserver says otherwise.")
	fs.StringVar(&p.CIDR, "vip-cidr", p.CIDR, "kube-vip compatibility (env vip_cidr): the VIP is always bound as a host address (/32, /128).")
	fs.StringVar(&p.LeaseName, "lease-name", p.LeaseName, "Control-plane Lease, in --namespace (env vip_leasename).")
	fs.StringVar(&p.LocalAPIServer, "local-apiserver", p.LocalAPIServer, "This node's own API server, used for the control-plane election and /readyz, never the VIP (env kubernetes_addr; default https://127.0.0.1:PORT).")
	fs.DurationVar(&p.ResolvePeriod, "address-refresh", p.ResolvePeriod, "How often a DNS --address is resolved again.")
	fs.DurationVar(&p.ProbePeriod, "apiserver-probe-period", p.ProbePeriod, "How often the local API server's /readyz is asked; two failures in a row give the VIP up.")
	fs.DurationVar(&p.ProbeTimeout, "apiserver-probe-timeout", p.ProbeTimeout, "Timeout of one /readyz request.")
	fs.BoolVar(&p.DDNS, "ddns", p.DDNS, "Dynamic DNS (env vip_ddns): obtain the address of the DNS name in --address by DHCP on a macvlan of --interface, sending the name's first label as host name.")
}

// validate checks the control-plane settings (with --controlplane only).
func (p *ControlPlaneConfig) validate(c *Config) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	if p.Address == "" {
		return bad("--controlplane (cp_enable) needs --address (address or vip_address): the control-plane VIP, an IP address or a DNS name")
	}
	if err := controlplane.CheckAddress(p.Address); err != nil {
		return bad("--address %q %v", p.Address, err)
	}
	if p.DDNS {
		if err := controlplane.CheckDDNS(p.Address, c.Interface, c.BGP && !c.LeaderElection); err != nil {
			return bad("--ddns (vip_ddns, dynamic DNS) %v", err)
		}
	}
	if p.Port < 1 || p.Port > 65535 {
		return bad("--port %d is not a TCP port", p.Port)
	}
	if p.CIDR != "" {
		if n, err := strconv.Atoi(strings.TrimPrefix(p.CIDR, "/")); err != nil || n < 0 || n > 128 {
			return bad("--vip-cidr (vip_cidr) %q is not a prefix length", p.CIDR)
		}
	}
	if errs := validation.IsDNS1123Subdomain(p.LeaseName); len(errs) > 0 {
		return bad("--lease-name (vip_leasename) %q: %s", p.LeaseName, errs[0])
	}
	if _, err := p.LocalURL(); err != nil {
		return bad("--local-apiserver (kubernetes_addr): %v", err)
	}
	if p.ResolvePeriod <= 0 || p.ProbePeriod <= 0 || p.ProbeTimeout <= 0 {
		return bad("--address-refresh, --apiserver-probe-period and --apiserver-probe-timeout must be positive")
	}
	return nil
}

// LocalURL is the local API server's URL; kube-vip's kubernetes_addr may
// be host:port or a URL.
func (p *ControlPlaneConfig) LocalURL() (string, error) {
	s := p.LocalAPIServer
	if s == "" {
		return "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Port)), nil
	}
	if !strings.Contains(s, "://") {
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(s, strconv.Itoa(p.Port))
		}
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return "", fmt.Errorf("%q is not an API server URL", p.LocalAPIServer)
	}
	return u.Scheme + "://" + u.Host, nil
}
