// Package ccm is vip's cloudprovider.Interface: LoadBalancer hands out
// addresses from the pools ConfigMap and InstancesV2 initialises nodes whose
// kubelet runs with --cloud-provider=external. For unclassed Services the
// status it returns is its output, written by the stock service controller;
// everything vip writes into Service status itself (classed Services, an
// address removed by a conflict quarantine or given back when it ends, a
// DHCP lease) goes through one writer, LoadBalancer.writeStatus (status.go).
// It knows nothing about how addresses are announced.
package ccm
