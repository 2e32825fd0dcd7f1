package cluster

import (
	"context"
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestAnswerDNS(t *testing.T) {
	cs := fake.NewClientset(&v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec:       v1.ServiceSpec{ClusterIP: "10.96.1.2"},
	})
	for _, tc := range []struct {
		name  string
		typ   dnsmessage.Type
		rcode dnsmessage.RCode
		a     string
	}{
		{"web.shop.svc.cluster.local.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, "10.96.1.2"},
		{"WEB.shop.svc.cluster.local.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, "10.96.1.2"},
		{"web.shop.svc.cluster.local.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, ""},
		{"other.shop.svc.cluster.local.", dnsmessage.TypeA, dnsmessage.RCodeNameError, ""},
		{"web.shop.cluster.local.", dnsmessage.TypeA, dnsmessage.RCodeNameError, ""},
		{"example.com.", dnsmessage.TypeA, dnsmessage.RCodeNameError, ""},
	} {
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, RecursionDesired: true})
		_ = b.StartQuestions()
		_ = b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(tc.name), Type: tc.typ, Class: dnsmessage.ClassINET})
		q, err := b.Finish()
		if err != nil {
			t.Fatal(err)
		}
		resp, err := answerDNS(context.Background(), cs, q)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var m dnsmessage.Message
		if err := m.Unpack(resp); err != nil {
			t.Fatal(err)
		}
		if m.Header.ID != 7 || !m.Header.Response || m.Header.RCode != tc.rcode {
			t.Errorf("%s %v: header %+v", tc.name, tc.typ, m.Header)
		}
		got := ""
		for _, a := range m.Answers {
			if r, ok := a.Body.(*dnsmessage.AResource); ok {
				got = netipFrom4(r.A)
			}
		}
		if got != tc.a {
			t.Errorf("%s %v: answer %q, want %q", tc.name, tc.typ, got, tc.a)
		}
	}
	if _, err := answerDNS(context.Background(), cs, []byte{1, 2, 3}); err == nil {
		t.Error("a truncated query got an answer")
	}
}

func netipFrom4(b [4]byte) string {
	return netipAddr(b).String()
}

func netipAddr(b [4]byte) interface{ String() string } { return netip.AddrFrom4(b) }
