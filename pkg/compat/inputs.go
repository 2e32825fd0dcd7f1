package compat

// Shorthands for the table below.
func env(name string, s Status, vip, note string, harmless ...string) Input {
	return Input{Kind: Env, Name: name, Status: s, Vip: vip, Note: note, Harmless: harmless}
}

func flag(name string, s Status, vip, note string, harmless ...string) Input {
	return Input{Kind: Flag, Name: name, Status: s, Vip: vip, Note: note, Harmless: harmless}
}

func bflag(name string, s Status, vip, note string, harmless ...string) Input {
	return Input{Kind: Flag, Name: name, Status: s, Vip: vip, Note: note, Bool: true, Harmless: harmless}
}

func ann(name string, s Status, note string) Input {
	return Input{Kind: Annotation, Name: name, Status: s, Note: note}
}

// Reasons shared by several inputs.
const (
	noWireGuard   = "WireGuard tunnels are not part of vip"
	noTable       = "routing-table mode is not part of vip"
	noIPVS        = "the IPVS control-plane load balancer is not part of vip"
	noEgress      = "Service egress (SNAT of Pod traffic) is not part of vip"
	noZebra       = "Zebra integration is not part of vip (vip embeds its own BGP speaker)"
	noMirror      = "traffic mirroring is not part of vip"
	noSecurity    = "service security rules are not part of vip"
	noEtcd        = "vip elects through Kubernetes Leases only"
	perAddress    = "vip always elects one node per address (and spreads them)"
	hostAddress   = "vip binds Service and control-plane addresses as host addresses (/32, /128)"
	noLabel       = "vip does not label nodes; the Lease holder is in the vip-addr-* Leases and in the Announcing Event"
	noPreserve    = "vip removes an address as soon as another node owns it (never two announcers)"
	noCfgFile     = "vip reads no configuration file: put the settings in the environment or on the command line"
	noLoseLeader  = "vip withdraws when the interface cannot announce and its peers take over by heartbeat"
	noHealthCheck = "vip probes the local API server's /readyz itself (--apiserver-probe-period)"
	noDHCPMode    = "vip's DHCP client takes IPv4 leases only, without kube-vip's back-off settings"
	noMPBGP       = "use --bgp-nexthop / --bgp-nexthop6 (vip's multiprotocol next hops)"
	noPacket      = "the Equinix Metal (Packet) API integration is not part of vip"
)

// inputs is the list. Keep it sorted by kind, then name.
var inputs = []Input{
	// kube-vip's environment variables (pkg/kubevip/config_envvar.go, and
	// the older names its documents still use).
	env("address", Honoured, "address", "control-plane VIP, an IP address or a DNS name"),
	env("annotation", Honoured, "annotations", "per-node BGP settings from Node annotations"),
	env("backend_health_check_interval", Refused, "", noIPVS),
	env("bgp_as", Honoured, "localAS", ""),
	env("bgp_attach_ip_to_interface", Accepted, "", "vip binds BGP-announced addresses on lo, or on --interface when given"),
	env("bgp_enable", Honoured, "bgp", ""),
	env("bgp_hold_time", Honoured, "bgp-hold-time", ""),
	env("bgp_keepalive_interval", Honoured, "bgp-keepalive-interval", ""),
	env("bgp_multihop", Honoured, "multihop", ""),
	env("bgp_peeraddress", Honoured, "peerAddress", ""),
	env("bgp_peeras", Honoured, "peerAS", ""),
	env("bgp_peerpass", Honoured, "peerPass", "prefer the Secret-backed --bgp-password-file"),
	env("bgp_peers", Honoured, "bgppeers", "address:AS:password:multihop[:port]"),
	env("bgp_routerid", Honoured, "bgpRouterID", ""),
	env("bgp_routerinterface", Honoured, "bgpRouterInterface", ""),
	env("bgp_sourceif", Honoured, "sourceIF", ""),
	env("bgp_sourceip", Honoured, "sourceIP", ""),
	env("config_file", Refused, "", noCfgFile),
	env("control_plane_health_check_address", Refused, "", noHealthCheck),
	env("control_plane_health_check_ca_path", Refused, "", noHealthCheck),
	env("control_plane_health_check_failure_threshold", Refused, "", noHealthCheck),
	env("control_plane_health_check_period_seconds", Refused, "", noHealthCheck),
	env("control_plane_health_check_timeout_seconds", Refused, "", noHealthCheck),
	env("cp_detect", Refused, "", "control-plane address detection is not part of vip: set address"),
	env("cp_enable", Honoured, "controlplane", "without svc_enable, Services are off (kube-vip's default)"),
	env("cp_namespace", Honoured, "namespace", ""),
	env("debounce_time", Accepted, "", "vip reconciles each Service as events arrive, without a debounce"),
	env("dhcp_backoff_attempts", Refused, "", noDHCPMode, "3"),
	env("dhcp_mode", Refused, "", noDHCPMode, "ipv4"),
	env("disable_service_updates", Refused, "", "vip-agent never writes Services; vip-ccm writes the status"),
	env("dns_mode", Refused, "", "vip resolves a DNS address to its first address", "first"),
	env("egress_clean", Refused, "", noEgress),
	env("egress_enableinternalsnat", Refused, "", noEgress),
	env("egress_podcidr", Refused, "", noEgress),
	env("egress_servicecidr", Refused, "", noEgress),
	env("egress_withnftables", Accepted, "", "names kube-vip's egress backend; vip has no egress"),
	env("enableUPNP", Honoured, "enableUPNP", "older name of enable_upnp"),
	env("enable_endpoints", Accepted, "", "vip reads EndpointSlices, which carry the same endpoints"),
	env("enable_node_labeling", Refused, "", noLabel),
	env("enable_service_security", Refused, "", noSecurity),
	env("enable_upnp", Honoured, "enableUPNP", ""),
	env("health_check_port", Honoured, "health-check-port", "serves /healthz there too, so a liveness probe on it works"),
	env("instance_name", Accepted, "", "names kube-vip's nftables tables; vip creates none"),
	env("iptables_backend", Refused, "", noIPVS),
	env("k8s_config_file", Honoured, "kubeconfig", "without it: in-cluster, else /etc/kubernetes/admin.conf"),
	env("kubernetes_addr", Honoured, "local-apiserver", ""),
	env("lb_class_legacy_handling", Refused, "", "vip always serves Services without a class besides lb_class_name; for the class alone set lb_class_only=true", "true"),
	env("lb_class_name", Honoured, "lb-class-name", ""),
	env("lb_class_only", Honoured, "lb-class-only", ""),
	env("lb_enable", Refused, "", noIPVS),
	env("lb_fwdmethod", Refused, "", noIPVS, "local"),
	env("lb_port", Refused, "", noIPVS, "6443"),
	env("mirror_dest_interface", Refused, "", noMirror),
	env("mpbgp_ipv4", Refused, "", noMPBGP),
	env("mpbgp_ipv6", Refused, "", noMPBGP),
	env("mpbgp_nexthop", Refused, "", noMPBGP),
	env("per_service_election_on_demand", Accepted, "", perAddress),
	env("port", Honoured, "port", ""),
	env("prometheus_server", Honoured, "metrics-address", "also /healthz and /readyz"),
	env("svc_election", Accepted, "service-election", perAddress),
	env("svc_enable", Honoured, "services", ""),
	env("svc_leasename", Accepted, "", perAddress+"; Leases vip-addr-<address> replace plndr-svcs-lock"),
	env("svc_namespace", Honoured, "services-namespace", "only Services of that namespace are watched and served"),
	env("vip_address", Honoured, "address", "older name of address"),
	env("vip_allow_interface_not_up", Accepted, "", "vip starts with the interface down and announces once it is up"),
	env("vip_arp", Honoured, "arp", ""),
	env("vip_arpRate", Accepted, "", "vip sends --garp-count gratuitous ARPs per take-over instead of repeating them"),
	env("vip_cidr", Accepted, "vip-cidr", "older name of vip_subnet; "+hostAddress),
	env("vip_cleanroutingtable", Refused, "", noTable),
	env("vip_ddns", Honoured, "ddns", "dynamic DNS for the control-plane address"),
	env("vip_interface", Honoured, "interface", "auto: the interface whose subnet covers each address (vip's default)"),
	env("vip_interfaceloglobal", Accepted, "", "vip binds addresses on lo with host scope, which is what BGP needs"),
	env("vip_leaderelection", Honoured, "leader-election", "ARP always elects; in BGP false puts the control-plane VIP on every node"),
	env("vip_leaseannotations", Accepted, "", "vip's Leases carry vip's own labels and annotations"),
	env("vip_leaseduration", Honoured, "lease-duration", "times the control-plane Lease; Services follow heartbeats"),
	env("vip_leasename", Honoured, "lease-name", "the control-plane Lease"),
	env("vip_loglevel", Accepted, "", "use -v"),
	env("vip_loseleadership", Refused, "", noLoseLeader),
	env("vip_loseleadership_timeout_seconds", Refused, "", noLoseLeader, "30"),
	env("vip_nodename", Honoured, "node-name", ""),
	env("vip_preserve_on_leadership_loss", Refused, "", noPreserve),
	env("vip_renewdeadline", Honoured, "lease-renew-deadline", ""),
	env("vip_retryperiod", Honoured, "lease-retry-period", ""),
	env("vip_routingprotocol", Refused, "", noTable),
	env("vip_routingtable", Refused, "", noTable),
	env("vip_routingtableid", Refused, "", noTable),
	env("vip_routingtabletype", Refused, "", noTable),
	env("vip_servicesinterface", Honoured, "services-interface", ""),
	env("vip_singlenode", Accepted, "", "a single node elects itself"),
	env("vip_skipdad", Accepted, "", "vip binds VIPs without duplicate address detection already and probes before announcing"),
	env("vip_startleader", Accepted, "", "vip has no fixed leader; the first live node takes the Lease"),
	env("vip_subnet", Refused, "", hostAddress, "32", "/32", "128", "/128", "32,128", "/32,/128"),
	env("vip_wireguard", Refused, "", noWireGuard),
	env("zebra_enable", Refused, "", noZebra),
	env("zebra_software_name", Refused, "", noZebra, "frr8.3"),
	env("zebra_url", Refused, "", noZebra, "unix:/var/run/frr/zserv.api"),
	env("zebra_version", Refused, "", noZebra, "6"),

	// kube-vip's flags (cmd/kube-vip.go, cmd/kube-vip-manifests.go, and the
	// older ones of the documents), read by `vip-agent manifest`.
	flag("address", Honoured, "address", "control-plane VIP"),
	bflag("allowInterfaceNotUp", Accepted, "", "vip starts with the interface down and announces once it is up"),
	flag("annotations", Honoured, "annotations", ""),
	bflag("arp", Honoured, "arp", ""),
	bflag("autodetectcp", Refused, "", "control-plane address detection is not part of vip: set --address"),
	bflag("bgp", Honoured, "bgp", ""),
	bflag("bgpAttachIPToInterface", Accepted, "", "vip binds BGP-announced addresses on lo, or on --interface when given"),
	flag("bgpHoldTimer", Honoured, "bgp-hold-time", "seconds"),
	flag("bgpKeepAliveInterval", Honoured, "bgp-keepalive-interval", "seconds"),
	flag("bgpRouterID", Honoured, "bgpRouterID", ""),
	flag("bgppeers", Honoured, "bgppeers", ""),
	bflag("cleanRoutingTable", Refused, "", noTable),
	flag("config-file", Refused, "", noCfgFile),
	flag("configMap", Accepted, "", "kube-vip's old service ConfigMap (plndr); vip-ccm reads the pools ConfigMap kubevip"),
	flag("controlPlaneHealthCheckAddress", Refused, "", noHealthCheck),
	flag("controlPlaneHealthCheckCAPath", Refused, "", noHealthCheck),
	flag("controlPlaneHealthCheckFailureThreshold", Refused, "", noHealthCheck, "3"),
	flag("controlPlaneHealthCheckPeriodSeconds", Refused, "", noHealthCheck, "5"),
	flag("controlPlaneHealthCheckTimeoutSeconds", Refused, "", noHealthCheck, "3"),
	bflag("controlplane", Honoured, "controlplane", "--vip/--address without --controlplane or --services also means the control plane"),
	bflag("ddns", Honoured, "ddns", ""),
	flag("debounceTime", Accepted, "", "vip reconciles each Service as events arrive, without a debounce"),
	flag("dhcpBackoffAttempts", Refused, "", noDHCPMode, "3"),
	flag("dhcpMode", Refused, "", noDHCPMode, "ipv4"),
	bflag("disableServiceUpdates", Refused, "", "vip-agent never writes Services; vip-ccm writes the status"),
	flag("dnsMode", Refused, "", "vip resolves a DNS address to its first address", "first"),
	bflag("egressWithNftables", Accepted, "", "names kube-vip's egress backend; vip has no egress"),
	bflag("enableEndpointSlices", Accepted, "", "vip always reads EndpointSlices"),
	bflag("enableEndpoints", Accepted, "", "vip reads EndpointSlices, which carry the same endpoints"),
	bflag("enableLoadBalancer", Refused, "", noIPVS),
	bflag("enableNodeLabeling", Refused, "", noLabel),
	flag("etcdCACert", Refused, "", noEtcd),
	flag("etcdCert", Refused, "", noEtcd),
	flag("etcdEndpoints", Refused, "", noEtcd),
	flag("etcdKey", Refused, "", noEtcd),
	flag("healthCheckPort", Honoured, "health-check-port", "serves /healthz there too"),
	flag("image", Honoured, "image", ""),
	bflag("inCluster", Honoured, "inCluster", ""),
	flag("instanceName", Accepted, "", "names kube-vip's nftables tables; vip creates none"),
	flag("interface", Honoured, "interface", "auto: the interface whose subnet covers each address"),
	bflag("k3s", Honoured, "k3s", "vip's own: the DaemonSet for k3s's auto-deploy folder"),
	flag("k8sConfigPath", Honoured, "kubeconfig-path", "generator: the host file mounted as the kubeconfig (super-admin.conf on kubeadm 1.29+'s first node); the agent takes it as --kubeconfig"),
	bflag("lbClassNameLegacyHandling", Refused, "", "vip always serves Services without a class besides --lbClassName; for the class alone use --lbClassOnly", "true"),
	flag("lbClassName", Honoured, "lb-class-name", ""),
	bflag("lbClassOnly", Honoured, "lb-class-only", ""),
	flag("lbForwardingMethod", Refused, "", noIPVS, "local"),
	flag("lbPort", Refused, "", noIPVS, "6443"),
	bflag("leaderElection", Honoured, "leader-election", "ARP always elects; in BGP it puts the control-plane VIP on the Lease holder only"),
	flag("leaderElectionType", Refused, "", noEtcd, "kubernetes"),
	flag("leaseDuration", Honoured, "lease-duration", "seconds, or a duration"),
	flag("leaseName", Honoured, "lease-name", "the control-plane Lease"),
	flag("leaseRenewDuration", Honoured, "lease-renew-deadline", ""),
	flag("leaseRetry", Honoured, "lease-retry-period", ""),
	flag("localAS", Honoured, "localAS", ""),
	flag("log", Accepted, "", "use -v"),
	bflag("loInterfaceGlobalScope", Accepted, "", "vip binds addresses on lo with host scope, which is what BGP needs"),
	bflag("loseLeadership", Refused, "", noLoseLeader),
	flag("loseLeadershiptTimeoutSeconds", Refused, "", noLoseLeader, "30"),
	bflag("metal", Refused, "", noPacket),
	flag("mirrorDestInterface", Refused, "", noMirror),
	bflag("multihop", Honoured, "multihop", ""),
	flag("namespace", Honoured, "namespace", ""),
	flag("nodeName", Accepted, "", "the manifest takes each node's name from spec.nodeName"),
	bflag("onlyAllowTrafficServicePorts", Refused, "", noSecurity),
	bflag("packet", Refused, "", noPacket),
	flag("packetKey", Refused, "", noPacket),
	flag("packetProject", Refused, "", noPacket),
	flag("peerAS", Honoured, "peerAS", ""),
	flag("peerAddress", Honoured, "peerAddress", ""),
	flag("peerPass", Honoured, "peerPass", "prefer the Secret-backed --bgp-password-file"),
	bflag("perServiceElectionOnDemand", Accepted, "", perAddress),
	flag("port", Honoured, "port", ""),
	bflag("preserveVipOnLeadershipLoss", Refused, "", noPreserve),
	flag("prometheusHTTPServer", Honoured, "metrics-address", ""),
	flag("provider-config", Refused, "", noPacket),
	flag("routingProtocol", Refused, "", noTable, "248"),
	flag("serviceInterface", Honoured, "services-interface", ""),
	bflag("services", Honoured, "services", ""),
	bflag("servicesElection", Accepted, "service-election", perAddress),
	flag("servicesLeaseName", Accepted, "", perAddress),
	flag("sourceIF", Honoured, "sourceIF", ""),
	flag("sourceIP", Honoured, "sourceIP", ""),
	bflag("table", Refused, "", noTable),
	flag("tableID", Refused, "", noTable, "198"),
	flag("tableType", Refused, "", noTable, "1"),
	bflag("taint", Honoured, "taint", "control-plane nodes only"),
	flag("vip", Honoured, "address", "older name of --address"),
	flag("vipSubnet", Refused, "", hostAddress, "32", "/32", "128", "/128", "32,128", "/32,/128"),
	bflag("wireguard", Refused, "", noWireGuard),
	bflag("zebra", Refused, "", noZebra),
	flag("zebraSoftwareName", Refused, "", noZebra, "frr8.3"),
	flag("zebraUrl", Refused, "", noZebra, "unix:/var/run/frr/zserv.api"),
	flag("zebraVersion", Refused, "", noZebra, "6"),

	// kube-vip's Service annotations (pkg/kubevip/annotations.go) and the
	// ones kube-vip-cloud-provider reads.
	ann("kube-vip.io/active-endpoint", Accepted, "written by kube-vip's egress; vip neither reads nor writes it"),
	ann("kube-vip.io/active-endpoint-ipv6", Accepted, "written by kube-vip's egress; vip neither reads nor writes it"),
	ann("kube-vip.io/allow-reconcile-without-endpoints", Honoured, "announce while no endpoint is ready"),
	ann("kube-vip.io/ddns", Event, "dynamic DNS for Service addresses is not part of vip (it is for the control-plane address: vip_ddns)"),
	ann("kube-vip.io/dhcp-broadcast", Event, "vip's DHCP client does not set the BROADCAST flag"),
	ann("kube-vip.io/egress*", Event, noEgress),
	ann("kube-vip.io/flush-conntrack", Event, noEgress),
	ann("kube-vip.io/forcePerServiceElection", Accepted, perAddress),
	ann("kube-vip.io/forwardUPNP", Honoured, "with enableUPNP"),
	ann("kube-vip.io/hwaddr", Accepted, "written by kube-vip; vip neither reads nor writes it"),
	ann("kube-vip.io/ignore", Honoured, ""),
	ann("kube-vip.io/ignore-service-security", Accepted, "service security rules are not part of vip, so there is nothing to skip"),
	ann("kube-vip.io/leaseName", Event, "vip elects one Lease per address (vip-addr-<address> in the agent namespace), not per Service"),
	ann("kube-vip.io/loadbalancerHostname", Event, "vip's DHCP client sends no host name for Service addresses"),
	ann("kube-vip.io/loadbalancerIPs", Honoured, "requests the address(es), as spec.loadBalancerIP"),
	ann("kube-vip.io/macvlanName", Event, "vip names the DHCP macvlan itself"),
	ann("kube-vip.io/requestedIP", Accepted, "written by kube-vip for DHCP renewals; vip keeps its DHCP records in Leases"),
	ann("kube-vip.io/rp_filter", Event, "vip does not change rp_filter"),
	ann("kube-vip.io/serviceInterface", Honoured, "within the admin's allowed interfaces"),
	ann("kube-vip.io/serviceVLAN", Event, "vip does not create VLAN sub-interfaces; set kube-vip.io/serviceInterface to an existing one"),
	ann("kube-vip.io/upnp-lease-duration", Honoured, ""),
	ann("kube-vip.io/vipHost", Accepted, "written by kube-vip; the announcing node is in the Announcing Event"),

	// kube-vip-cloud-provider's pools ConfigMap keys.
	{Kind: ConfigKey, Name: "allow-share-<namespace>, allow-share-global", Status: Honoured, Note: "Services may share an address when their ports differ"},
	{Kind: ConfigKey, Name: "cidr-<namespace>, cidr-global", Status: Honoured},
	{Kind: ConfigKey, Name: "interface-<namespace>, interface-global", Status: Honoured, Note: "read by vip-agent"},
	{Kind: ConfigKey, Name: "range-<namespace>, range-global", Status: Honoured},
	{Kind: ConfigKey, Name: "search-order", Status: Honoured},
	{Kind: ConfigKey, Name: "skip-end-ips-in-cidr", Status: Honoured},

	// kube-vip-cloud-provider's environment and flags.
	{Kind: CCMEnv, Name: "KUBEVIP_CONFIG_MAP", Status: Honoured, Vip: "config-map-name"},
	{Kind: CCMEnv, Name: "KUBEVIP_CUSTOM_LOADBALANCERCLASS_NAME", Status: Honoured, Vip: "load-balancer-class"},
	{Kind: CCMEnv, Name: "KUBEVIP_ENABLE_LOADBALANCERCLASS", Status: Honoured, Vip: "load-balancer-class-only"},
	{Kind: CCMEnv, Name: "KUBEVIP_NAMESPACE", Status: Honoured, Vip: "config-map-namespace"},
	{Kind: CCMFlag, Name: "cloud-controller-manager flags (--leader-elect-resource-name, --kubeconfig, --v …)", Status: Honoured,
		Note: "vip-ccm is a cloud-controller-manager too; its Deployment's command /kube-vip-cloud-provider runs vip-ccm"},
}
