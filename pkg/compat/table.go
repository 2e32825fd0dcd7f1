package compat

import (
	"fmt"
	"strings"
)

// Metric maps a kube-vip metric onto vip's nearest one, for dashboards.
type Metric struct {
	KubeVip, Vip, Note string
}

// Metrics is kube-vip's metrics (pkg/metrics/prometheus.go) and what to
// read instead. Vip "" means vip has no counterpart.
var Metrics = []Metric{
	{"kube_vip_active_services", "vip_agent_service_addresses_announced", "addresses this node announces (kube-vip counts Services)"},
	{"kube_vip_build_info", "", "vip-agent --version; the image tag"},
	{"kube_vip_is_leader", "vip_agent_controlplane_leader", "control-plane Lease; Service addresses: vip_agent_leases_held"},
	{"kube_vip_leader_election_transitions_total", "vip_agent_controlplane_lease_transitions_total", "label reason; Service take-overs: vip_agent_lease_takeovers_total"},
	{"kube_vip_manager_all_services_events", "vip_agent_reconciles_total", "label result"},
	{"kube_vip_manager_bgp_session_info", "vip_agent_bgp_session_up", "label peer; 1 while established (kube-vip: label state)"},
	{"kube_vip_service_election_attempts_total", "vip_agent_lease_takeovers_total", "vip elects per address from heartbeats; only take-overs are events"},
	{"kube_vip_service_election_errors_total", "vip_agent_election_errors_total", ""},
	{"kube_vip_service_election_loops", "vip_agent_leases_held", "no election loop per Service: Leases held by this node"},
	{"kube_vip_service_reconcile_duration_seconds", "vip_agent_reconcile_duration_seconds", ""},
	{"kube_vip_service_reconcile_errors_total", `vip_agent_reconciles_total{result="error"}`, ""},
}

// Table is the compatibility table of docs/migration.md, between its
// markers: every input, then the metric mapping.
func Table() string {
	var b strings.Builder
	cell := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	for _, k := range Kinds {
		fmt.Fprintf(&b, "\n### %s\n\n| name | vip | how / why |\n| --- | --- | --- |\n", kindTitle(k))
		for _, in := range Of(k) {
			status := string(in.Status)
			if in.Status == Refused && len(in.Harmless) > 0 {
				status += " (unless " + strings.Join(quoted(in.Harmless), ", ") + ")"
			}
			how := in.Note
			if in.Vip != "" && k != CCMFlag {
				prefix := "`--" + in.Vip + "`"
				if how != "" {
					prefix += "; "
				}
				how = prefix + how
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s |\n", cell(in.Name), status, cell(how))
		}
	}
	b.WriteString("\n### Metrics (for dashboards)\n\n| kube-vip | vip | note |\n| --- | --- | --- |\n")
	for _, m := range Metrics {
		v := "—"
		if m.Vip != "" {
			v = "`" + m.Vip + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", m.KubeVip, v, cell(m.Note))
	}
	return b.String()
}

func quoted(l []string) []string {
	out := make([]string, len(l))
	for i, s := range l {
		out[i] = "`" + s + "`"
	}
	return out
}

// kindTitle is the plural heading of a kind: "Kube-vip flags (manager and
// manifest generator)".
func kindTitle(k Kind) string {
	t := string(k)
	noun, rest, _ := strings.Cut(t, " (")
	if rest != "" {
		rest = " (" + rest
	}
	return strings.ToUpper(noun[:1]) + noun[1:] + "s" + rest
}
