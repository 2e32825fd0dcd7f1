// Command vip-ccm is vip's cloud-controller-manager: it gives LoadBalancer
// Services addresses from the pools ConfigMap and initialises nodes whose
// kubelet runs with --cloud-provider=external.
//
// It reads kube-vip-cloud-provider's environment variables and runs the
// cloud-provider command with vip's provider (internal/ccmapp), which
// parses the flags.
package main

import (
	"fmt"
	"os"

	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"

	"github.com/vip-lb/vip/internal/ccmapp"
	"github.com/vip-lb/vip/internal/version"
)

func main() {
	// The command's own --version prints the Kubernetes libraries' version;
	// vip-ccm reports its own release.
	for _, a := range os.Args[1:] {
		if a == "--version" || a == "--version=true" {
			fmt.Println("vip-ccm", version.Version)
			return
		}
	}
	cfg := ccmapp.NewConfig()
	if err := cfg.FromEnv(os.LookupEnv); err != nil {
		fmt.Fprintln(os.Stderr, "vip-ccm:", err)
		os.Exit(2)
	}
	os.Exit(ccmapp.Run(cfg))
}
