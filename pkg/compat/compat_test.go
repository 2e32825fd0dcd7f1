package compat_test

import (
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/vip-lb/vip/pkg/compat"
	"github.com/vip-lb/vip/pkg/ipam"
	"github.com/vip-lb/vip/pkg/lbsvc"
)

var update = flag.Bool("update", false, "rewrite the table in docs/migration.md")

const (
	migration = "../../docs/migration.md"
	begin     = "<!-- compat-table:begin (generated from pkg/compat; go test ./pkg/compat -update) -->"
	end       = "<!-- compat-table:end -->"
)

// TestMigrationTable: docs/migration.md's compatibility table is the
// list's own (go test ./pkg/compat -update rewrites it).
func TestMigrationTable(t *testing.T) {
	b, err := os.ReadFile(migration)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("docs/migration.md lacks the markers %q … %q", begin, end)
	}
	want := compat.Table()
	if got := doc[i+len(begin) : j]; got != want {
		if *update {
			if err := os.WriteFile(migration, []byte(doc[:i+len(begin)]+want+doc[j:]), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Errorf("docs/migration.md's compatibility table differs from pkg/compat; run go test ./pkg/compat -update")
	}
}

// TestHonouredAnnotationsAreCode: the annotations listed as honoured are
// the ones vip's code reads, and the reverse.
func TestHonouredAnnotationsAreCode(t *testing.T) {
	code := map[string]bool{
		lbsvc.AnnotationLoadBalancerIPs: true, lbsvc.AnnotationIgnore: true, lbsvc.AnnotationServiceInterface: true,
		lbsvc.AnnotationForwardUPNP: true, lbsvc.AnnotationUPNPLeaseDuration: true, lbsvc.AnnotationAllowWithoutEndpoints: true,
	}
	for _, in := range compat.Of(compat.Annotation) {
		if in.Status == compat.Honoured && !code[in.Name] {
			t.Errorf("%s is listed as honoured but no code constant reads it", in.Name)
		}
		delete(code, in.Name)
	}
	for name := range code {
		t.Errorf("vip reads %s, which the list does not have", name)
	}
	if _, ok := compat.UnsupportedAnnotations()[lbsvc.AnnotationLeaseName]; !ok {
		t.Errorf("%s must be answered with an Event: vip elects per address", lbsvc.AnnotationLeaseName)
	}
}

// TestConfigMapKeysParse: every listed pools ConfigMap key is one vip's
// parser takes.
func TestConfigMapKeysParse(t *testing.T) {
	values := map[string]string{"cidr": "10.9.0.0/29", "range": "10.9.1.1-10.9.1.5", "allow-share": "true", "interface": "eth0",
		"search-order": "desc", "skip-end-ips-in-cidr": "true"}
	data := map[string]string{}
	for _, in := range compat.Of(compat.ConfigKey) {
		for _, key := range strings.Split(in.Name, ", ") {
			key = strings.ReplaceAll(key, "<namespace>", "team")
			prefix := key
			if k, _, ok := strings.Cut(key, "-team"); ok {
				prefix = k
			} else if k, _, ok := strings.Cut(key, "-global"); ok {
				prefix = k
			}
			v, ok := values[prefix]
			if !ok {
				t.Fatalf("no test value for %s", key)
			}
			data[key] = v
		}
	}
	if _, errs := ipam.ParseConfig(data); len(errs) > 0 {
		t.Errorf("listed keys refused by the parser: %v", errs)
	}
}

// TestMetricMappingDocumented: the vip metrics the mapping names are
// documented (docs/metrics.md is checked against the code).
func TestMetricMappingDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`^[a-z_]+`)
	for _, m := range compat.Metrics {
		if m.Vip == "" {
			continue
		}
		if n := name.FindString(m.Vip); !strings.Contains(string(b), "`"+n+"`") {
			t.Errorf("%s maps to %s, which docs/metrics.md does not list", m.KubeVip, n)
		}
	}
}

// TestHarmlessValues covers the value rule of refused inputs.
func TestHarmlessValues(t *testing.T) {
	for _, tc := range []struct {
		kind     compat.Kind
		name, v  string
		harmless bool
	}{
		{compat.Env, "vip_wireguard", "false", true},
		{compat.Env, "vip_wireguard", "true", false},
		{compat.Env, "vip_subnet", "32", true},
		{compat.Env, "vip_subnet", "24", false},
		{compat.Env, "lb_class_legacy_handling", "true", true},
		{compat.Env, "lb_class_legacy_handling", "false", false},
		{compat.Env, "config_file", "", true},
	} {
		in, ok := compat.Lookup(tc.kind, tc.name)
		if !ok {
			t.Fatalf("%s not listed", tc.name)
		}
		if got := in.HarmlessValue(tc.v); got != tc.harmless {
			t.Errorf("%s=%q harmless = %v, want %v", tc.name, tc.v, got, tc.harmless)
		}
	}
}
