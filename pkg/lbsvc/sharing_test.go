package lbsvc

import (
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestSharingConsent(t *testing.T) {
	for _, tc := range []struct {
		key, with string
		wantKey   string
		wantNS    []string
	}{
		{"", "", "", nil},
		{"k", "", "", nil}, // a key without namespaces is no consent
		{"", "a", "", nil}, // nor namespaces without a key
		{" k ", " a , ,b ", "k", []string{"a", "b"}},
		{"k", "*", "k", []string{"*"}},
		{strings.Repeat("k", 254), "a", "", nil},
	} {
		svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
			AnnotationSharingKey: tc.key, AnnotationSharingCrossNamespace: tc.with}}}
		k, ns := SharingConsent(svc)
		if k != tc.wantKey || !slices.Equal(ns, tc.wantNS) {
			t.Errorf("%q %q: got %q %q, want %q %q", tc.key, tc.with, k, ns, tc.wantKey, tc.wantNS)
		}
	}
}

func FuzzSharingConsent(f *testing.F) {
	f.Add("k", "a,b")
	f.Add("", "*")
	f.Fuzz(func(t *testing.T, key, with string) {
		svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
			AnnotationSharingKey: key, AnnotationSharingCrossNamespace: with}}}
		k, ns := SharingConsent(svc)
		if (k == "") != (len(ns) == 0) || len(k) > maxSharingKey || len(ns) > 64 {
			t.Fatalf("key %q namespaces %q", k, ns)
		}
		for _, n := range ns {
			if n == "" || len(n) > 63 || strings.Contains(n, ",") || n != strings.TrimSpace(n) {
				t.Fatalf("namespace %q", n)
			}
		}
	})
}
