// Package ccm is vip's cloudprovider.Interface and vip-ccm's service
// controller: LoadBalancer hands out addresses from the pools ConfigMap,
// InstancesV2 initialises nodes whose kubelet runs with
// --cloud-provider=external, and ServiceController (servicecontroller.go)
// serves LoadBalancer Services without a class and of vip's class in place
// of the cloud-provider library's stock service controller, which vip-ccm
// does not run. It is the only code that writes Service status
// (ServiceController.writeStatus, status.go). A change no Service update
// brings changes state and queues the Services it concerns for that
// controller: a conflict record quarantines an address (conflicts.go) and
// queues its holders, whose sync takes it out and gives another address
// where the request allows; the quarantine's end queues the Services that
// request it; a DHCP lease recorded by the agent (dhcp.go) queues its
// Service. The package knows nothing about how addresses are announced.
package ccm
