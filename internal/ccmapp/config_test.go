package ccmapp

import (
	"net/netip"
	"os"
	"slices"
	"testing"

	"github.com/spf13/pflag"

	"github.com/vip-lb/vip/pkg/lbsvc"
)

func TestKubeVipEnvironment(t *testing.T) {
	t.Setenv("KUBEVIP_NAMESPACE", "lb")
	t.Setenv("KUBEVIP_CONFIG_MAP", "pools")
	t.Setenv("KUBEVIP_ENABLE_LOADBALANCERCLASS", "true")
	vf := NewConfig()
	if err := vf.FromEnv(os.LookupEnv); err != nil {
		t.Fatal(err)
	}
	o, err := vf.Complete()
	if err != nil {
		t.Fatal(err)
	}
	if o.ConfigMapNamespace != "lb" || o.ConfigMapName != "pools" {
		t.Errorf("ConfigMap %s/%s", o.ConfigMapNamespace, o.ConfigMapName)
	}
	if !o.Class.Only || o.Class.Name != lbsvc.DefaultLoadBalancerClass {
		t.Errorf("class %+v", o.Class)
	}

	t.Setenv("KUBEVIP_CUSTOM_LOADBALANCERCLASS_NAME", "example.com/lb")
	vf = NewConfig()
	if err := vf.FromEnv(os.LookupEnv); err != nil {
		t.Fatal(err)
	}
	if vf.opts.Class.Name != "example.com/lb" {
		t.Errorf("custom class %q", vf.opts.Class.Name)
	}

	t.Setenv("KUBEVIP_ENABLE_LOADBALANCERCLASS", "yes please")
	if err := NewConfig().FromEnv(os.LookupEnv); err == nil {
		t.Error("a bad bool was accepted")
	}
}

func TestFlags(t *testing.T) {
	vf := NewConfig()
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	vf.AddFlags(fs)
	if err := fs.Parse([]string{"--control-plane-address=192.168.0.40, fd00::40", "--control-plane-address=10.0.0.1",
		"--load-balancer-class=x/y", "--config-map-name=p", "--retry-after=3s"}); err != nil {
		t.Fatal(err)
	}
	o, err := vf.Complete()
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("192.168.0.40"), netip.MustParseAddr("fd00::40"), netip.MustParseAddr("10.0.0.1")}
	if !slices.Equal(o.ControlPlaneVIPs, want) {
		t.Errorf("control-plane addresses %v", o.ControlPlaneVIPs)
	}
	if o.Class.Name != "x/y" || o.Class.Only || o.ConfigMapName != "p" || o.RetryAfter.Seconds() != 3 {
		t.Errorf("options %+v", o)
	}
	vf.cp = []string{"not-an-ip"}
	if _, err := vf.Complete(); err == nil {
		t.Error("bad control-plane address accepted")
	}
	vf.cp = nil
	vf.opts.Class = lbsvc.ClassRule{Only: true}
	if _, err := vf.Complete(); err == nil {
		t.Error("class-only without a class name accepted")
	}
}

func TestPresetsAreFlags(t *testing.T) {
	// Every preset must name a flag of the command, or it silently does
	// nothing.
	cmd, err := NewCommand(NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range presets {
		f := cmd.Flags().Lookup(name)
		if f == nil {
			t.Errorf("preset %q is not a flag", name)
			continue
		}
		if f.DefValue != v {
			t.Errorf("--%s default %q, want %q", name, f.DefValue, v)
		}
	}
	for _, name := range []string{"control-plane-address", "load-balancer-class", "load-balancer-class-only", "config-map-name", "config-map-namespace", "retry-after", "all-service-events"} {
		if cmd.Flags().Lookup(name) == nil {
			t.Errorf("no --%s", name)
		}
	}
}
