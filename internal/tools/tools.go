//go:build tools

// Package tools pins the modules vip's packages use, so go.mod stays stable
// while packages are added.
package tools

import (
	_ "github.com/go-logr/logr"
	_ "github.com/huin/goupnp/dcps/internetgateway2"
	_ "github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	_ "github.com/mdlayher/arp"
	_ "github.com/mdlayher/ethernet"
	_ "github.com/mdlayher/ndp"
	_ "github.com/mdlayher/packet"
	_ "github.com/osrg/gobgp/v3/api"
	_ "github.com/osrg/gobgp/v3/pkg/server"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/prometheus/client_golang/prometheus/testutil"
	_ "github.com/spf13/cobra"
	_ "github.com/spf13/pflag"
	_ "github.com/vishvananda/netlink"
	_ "github.com/vishvananda/netns"
	_ "go4.org/netipx"
	_ "google.golang.org/protobuf/types/known/anypb"
	_ "k8s.io/api/core/v1"
	_ "k8s.io/client-go/dynamic"
	_ "k8s.io/client-go/kubernetes"
	_ "k8s.io/client-go/kubernetes/fake"
	_ "k8s.io/client-go/tools/clientcmd"
	_ "k8s.io/client-go/tools/leaderelection"
	_ "k8s.io/cloud-provider/app"
	_ "k8s.io/cloud-provider/options"
	_ "k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/legacyregistry"
	_ "k8s.io/controller-manager/app"
	_ "k8s.io/klog/v2"
	_ "sigs.k8s.io/yaml"
)
