// Package ccm is vip's cloudprovider.Interface and vip-ccm's service
// controller: LoadBalancer hands out addresses from the pools ConfigMap,
// InstancesV2 initialises nodes whose kubelet runs with
// --cloud-provider=external, and ServiceController (servicecontroller.go)
// serves LoadBalancer Services without a class and of vip's class in place
// of the cloud-provider library's stock service controller, which vip-ccm
// does not run: one controller writes Service status. Every status write
// goes through one function, LoadBalancer.writeStatus (status.go): the
// controller's, and the ones for a change no Service update brings (an
// address removed by a conflict quarantine or given back when it ends, a
// DHCP lease recorded by the agent). It knows nothing about how addresses
// are announced.
package ccm
