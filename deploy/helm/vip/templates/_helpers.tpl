{{/* Image of a vip program: repository:tag, the tag defaulting to appVersion. */}}
{{- define "vip.image" -}}
{{ .image.repository }}:{{ .image.tag | default .appVersion }}
{{- end }}

{{/* One kube-vip bgp_peers entry: address:AS::multihop[:port], IPv6 in brackets. */}}
{{- define "vip.bgpPeer" -}}
{{- if contains ":" (toString .address) }}[{{ .address }}]{{ else }}{{ .address }}{{ end }}:{{ .as }}::{{ .multihop | default false }}{{ with .port }}:{{ . }}{{ end }}
{{- end }}

{{/* Fails rendering on values the programs would refuse. */}}
{{- define "vip.validate" -}}
{{- if not (has .Values.mode (list "arp" "bgp")) }}
{{- fail (printf "mode %q: must be arp or bgp" .Values.mode) }}
{{- end }}
{{- if and (eq .Values.mode "bgp") (not .Values.bgp.peers) }}
{{- fail "mode bgp needs at least one entry in bgp.peers" }}
{{- end }}
{{- if and .Values.ccm.loadBalancerClassOnly (not .Values.ccm.loadBalancerClass) }}
{{- fail "ccm.loadBalancerClassOnly needs ccm.loadBalancerClass" }}
{{- end }}
{{- end }}

{{/* setOrUnset (list MAP KEY VALUE): MAP.KEY = VALUE, or no KEY when VALUE is empty. */}}
{{- define "vip.setOrUnset" -}}
{{- $m := index . 0 }}{{ $k := index . 1 }}{{ $v := index . 2 }}
{{- if $v }}{{ $_ := set $m $k $v }}{{ else }}{{ $_ := unset $m $k }}{{ end }}
{{- end }}
