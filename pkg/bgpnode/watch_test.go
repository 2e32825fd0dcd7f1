package bgpnode

import (
	"context"
	"encoding/base64"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"

	"github.com/vip-lb/vip/pkg/bgpconfig"
	"github.com/vip-lb/vip/pkg/testbed"
)

// wait is how long an eventual condition may take on a loaded machine; it
// bounds a failing test, it is no assertion about speed.
const wait = time.Minute

// nextEvent returns the next Event the watch recorded.
func nextEvent(t *testing.T, rec *record.FakeRecorder) string {
	t.Helper()
	select {
	case ev := <-rec.Events:
		return ev
	case <-time.After(wait):
		t.Fatal("no Event")
		return ""
	}
}

func wantEvent(t *testing.T, rec *record.FakeRecorder, prefix, contains string) {
	t.Helper()
	ev := nextEvent(t, rec)
	if !strings.HasPrefix(ev, prefix) || !strings.Contains(ev, contains) {
		t.Fatalf("Event %q; want %q containing %q", ev, prefix, contains)
	}
}

// edit changes the Node in the API server.
func edit(t *testing.T, ctx context.Context, client kubernetes.Interface, name string, f func(*v1.Node)) {
	t.Helper()
	n, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f(n)
	if _, err := client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func nextConfig(t *testing.T, applied <-chan bgpconfig.Config) bgpconfig.Config {
	t.Helper()
	select {
	case c := <-applied:
		return c
	case <-time.After(wait):
		t.Fatal("no configuration applied")
		return bgpconfig.Config{}
	}
}

// TestWatch follows one Node through the life the watch is for: it waits
// for complete annotations (one Warning however often the Node changes in
// the same bad way), starts with them, applies good changes, keeps the last
// good configuration on a bad change or a refused one, follows peer node
// selectors when the labels change, and says once that passwords arrive
// in annotations.
func TestWatch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	env := testbed.Start(t)
	client := env.AdminClient()
	ctx, cancel := context.WithTimeout(context.Background(), 3*wait)
	defer cancel()
	const node, prefix = "n1", "kube-vip.io"
	if _, err := client.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: node, Labels: map[string]string{"rack": "a"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sel, err := bgpconfig.ParsePeerSelectors([]string{"10.0.0.1=rack=a"})
	if err != nil {
		t.Fatal(err)
	}
	rec := record.NewFakeRecorder(64)
	w := New(Options{Client: client, Node: node, Prefix: prefix, Base: bgpconfig.Config{AS: 65000},
		Selectors: sel, Logger: logr.Discard(), Recorder: rec})

	type started struct {
		c   bgpconfig.Config
		err error
	}
	startDone := make(chan started, 1)
	go func() {
		c, err := w.Start(ctx)
		startDone <- started{c, err}
	}()

	// No router ID, no peers: the watch waits and says why, once.
	wantEvent(t, rec, "Warning "+ReasonConfigInvalid, "router ID is not set")
	edit(t, ctx, client, node, func(n *v1.Node) { n.Labels["unrelated"] = "x" }) // the same error again: no Event
	edit(t, ctx, client, node, func(n *v1.Node) {
		n.Annotations = map[string]string{prefix + "/" + bgpconfig.KeyNodeASN: "65001"} // another error
	})
	wantEvent(t, rec, "Warning "+ReasonConfigInvalid, "incomplete")

	edit(t, ctx, client, node, func(n *v1.Node) {
		n.Annotations = map[string]string{
			prefix + "/" + bgpconfig.KeyNodeASN: "65001", prefix + "/" + bgpconfig.KeySourceIP: "10.0.0.11",
			prefix + "/" + bgpconfig.KeyPeerIP: "10.0.0.1, 10.0.0.2", prefix + "/" + bgpconfig.KeyPeerASN: "64512",
		}
	})
	var s started
	select {
	case s = <-startDone:
	case <-time.After(wait):
		t.Fatal("Start did not return once the annotations were complete")
	}
	if s.err != nil {
		t.Fatal(s.err)
	}
	if s.c.AS != 65001 || s.c.RouterID != netip.MustParseAddr("10.0.0.11") || len(s.c.Peers) != 2 {
		t.Fatalf("started with %+v", s.c)
	}

	applied := make(chan bgpconfig.Config, 8)
	refuse := errors.New("speaker refused")
	go w.Follow(ctx, func(_ context.Context, c bgpconfig.Config) error {
		if c.AS == 65009 {
			return refuse
		}
		applied <- c
		return nil
	})

	// A bad change keeps the last good configuration and says so.
	edit(t, ctx, client, node, func(n *v1.Node) { n.Annotations[prefix+"/"+bgpconfig.KeyNodeASN] = "not-a-number" })
	wantEvent(t, rec, "Warning "+ReasonConfigInvalid, bgpconfig.KeyNodeASN)
	// A change the speaker refuses is reported and not taken either.
	edit(t, ctx, client, node, func(n *v1.Node) { n.Annotations[prefix+"/"+bgpconfig.KeyNodeASN] = "65009" })
	wantEvent(t, rec, "Warning "+ReasonConfigInvalid, refuse.Error())
	// A good change is applied: the first configuration applied is this one.
	edit(t, ctx, client, node, func(n *v1.Node) { n.Annotations[prefix+"/"+bgpconfig.KeyNodeASN] = "65002" })
	if c := nextConfig(t, applied); c.AS != 65002 || len(c.Peers) != 2 {
		t.Fatalf("applied %+v", c)
	}

	// Moved to rack b: the selector drops peer 10.0.0.1.
	edit(t, ctx, client, node, func(n *v1.Node) { n.Labels["rack"] = "b" })
	c := nextConfig(t, applied)
	if len(c.Peers) != 1 || c.Peers[0].Address != netip.MustParseAddr("10.0.0.2") ||
		len(c.Deselected) != 1 || c.Deselected[0] != netip.MustParseAddr("10.0.0.1") {
		t.Fatalf("after the label change: peers %v, deselected %v", c.Peers, c.Deselected)
	}

	// Passwords in annotations: one Warning naming the annotations, never
	// the password, however often the Node changes.
	const secret = "Tops3cret"
	edit(t, ctx, client, node, func(n *v1.Node) {
		n.Annotations[prefix+"/"+bgpconfig.KeyPassword] = base64.StdEncoding.EncodeToString([]byte(secret))
	})
	ev := nextEvent(t, rec)
	if !strings.HasPrefix(ev, "Warning "+ReasonPasswordPlain) || !strings.Contains(ev, prefix) || strings.Contains(ev, secret) {
		t.Fatalf("Event %q", ev)
	}
	nextConfig(t, applied) // the passwords are part of the configuration
	edit(t, ctx, client, node, func(n *v1.Node) {
		n.Annotations[prefix+"/"+bgpconfig.KeyPassword] = base64.StdEncoding.EncodeToString([]byte("other"))
	})
	nextConfig(t, applied)
	// The next Event is the one for the next problem, not a second
	// password warning.
	edit(t, ctx, client, node, func(n *v1.Node) { n.Labels["rack"] = "c"; delete(n.Annotations, prefix+"/"+bgpconfig.KeyPeerIP) })
	wantEvent(t, rec, "Warning "+ReasonConfigInvalid, "incomplete")
}

// TestSessionEvents: a session going up is Normal, going down a Warning
// naming the node whose routes are withdrawn; plain passwords are named by
// source only.
func TestSessionEvents(t *testing.T) {
	rec := record.NewFakeRecorder(4)
	SessionEvent(rec, "n1", netip.MustParseAddr("10.0.0.1"), true, "established")
	SessionEvent(rec, "n1", netip.MustParseAddr("10.0.0.1"), false, "active")
	WarnPlainPasswords(logr.Discard(), rec, "n1", nil)
	WarnPlainPasswords(logr.Discard(), rec, "n1", []string{"--bgppeers (bgp_peers)"})
	for _, want := range []string{
		"Normal " + ReasonSessionUp + " BGP session with 10.0.0.1 established",
		"Warning " + ReasonSessionDown + " BGP session with 10.0.0.1 went down (now active); its routes from n1 are withdrawn",
		"Warning " + ReasonPasswordPlain + " BGP passwords arrive in plain text through --bgppeers (bgp_peers)",
	} {
		if ev := <-rec.Events; !strings.HasPrefix(ev, want) {
			t.Errorf("Event %q; want %q", ev, want)
		}
	}
	if len(rec.Events) != 0 {
		t.Errorf("unexpected Event %q", <-rec.Events)
	}
}
