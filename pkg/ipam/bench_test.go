package ipam

import (
	"strconv"
	"testing"
)

// BenchmarkAssign measures n single-stack assignments from the namespace's /16 on a fresh
// allocator; ns/assign should stay flat as n grows.
func BenchmarkAssign(b *testing.B) {
	cfg, errs := ParseConfig(map[string]string{"cidr-global": "10.0.0.0/24", "cidr-dev": "10.1.0.0/16"})
	if len(errs) > 0 {
		b.Fatal(errs)
	}
	for _, n := range []int{1000, 10000} {
		keys := make([]string, n)
		for i := range keys {
			keys[i] = "dev/svc-" + strconv.Itoa(i)
		}
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				a := NewAllocator()
				a.SetConfig(cfg)
				for _, k := range keys {
					if _, err := a.Assign(Request{Key: k, Namespace: "dev", Families: []Family{IPv4}, Ports: []Port{{Port: 80}}}); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/assign")
		})
	}
}
