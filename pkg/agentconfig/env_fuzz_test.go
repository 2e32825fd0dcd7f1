package agentconfig

import (
	"errors"
	"strings"
	"testing"
)

// FuzzEnv feeds arbitrary kube-vip style environments (one name=value per
// line) to the agent's configuration: it must never panic, and whatever it
// refuses is one line wrapping ErrConfig, naming the setting.
func FuzzEnv(f *testing.F) {
	for _, s := range []string{
		"vip_arp=true\nvip_interface=eth0\nsvc_enable=true",
		"bgp_enable=true\nbgp_routerid=10.0.0.1\nbgp_as=65001\nbgp_peers=10.0.0.2:65000::false,[fd00::1]:65000:pw:true",
		"bgp_enable=true\nbgp_routerinterface=lo\nbgp_peeraddress=10.0.0.2\nbgp_peeras=x",
		"vip_arp=true\nvip_leaseduration=-1\nvip_renewdeadline=0\nvip_retryperiod=1",
		"cp_enable=true\nvip_arp=true\naddress=10.0.0.5\nport=99999",
		"vip_arp=yes\nbgp_enable=1",
		"bgp_enable=true\nbgp_routerid=10.0.0.1\nbgp_peers=10.0.0.2:1\nbgp_peer_node_selectors=10.0.0.2=rack in (a",
		"vip_wireguard=true",
		"enable_upnp=true\nvip_arp=true",
		"bgp_enable=true\nbgp_hold_time=3\nbgp_keepalive_interval=3",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		env := map[string]string{}
		for _, line := range strings.Split(in, "\n") {
			k, v, ok := strings.Cut(line, "=")
			if !ok || k == "" {
				continue
			}
			// Host names would make the agent resolve them at run time;
			// configuration parsing never looks them up, but keep the
			// fuzzer to addresses anyway.
			env[k] = v
		}
		_, err := parseBGP(t, nil, env)
		if err == nil {
			return
		}
		if !errors.Is(err, ErrConfig) {
			t.Fatalf("env %q: error %v does not wrap ErrConfig", env, err)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Fatalf("env %q: multi-line error %q", env, err)
		}
	})
}
