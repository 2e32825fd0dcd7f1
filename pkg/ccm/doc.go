// Package ccm is vip's cloudprovider.Interface: LoadBalancer hands out
// addresses from the pools ConfigMap and InstancesV2 initialises nodes whose
// kubelet runs with --cloud-provider=external. It never edits a Service: the
// status it returns is its whole output. It knows nothing about how addresses
// are announced.
package ccm
