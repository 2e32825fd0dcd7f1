package ccmtest

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestReadyz: vip-ccm's /readyz (the Deployment's readiness probe) fails
// (500, the healthz convention of Kubernetes components) while the
// instance cannot reach the API server, answers 200 once it leads and its
// controllers run on synced informers, and 200 for a standby that sees
// another instance hold the Lease. Both run with leader election, as
// shipped.
func TestReadyz(t *testing.T) {
	h := New(t)
	ctx := tctx(t)
	h.SetPools(ctx, map[string]string{"cidr-global": "10.90.0.0/28"})

	if err := h.Env.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	leader := h.StartCCM("vip-ccm-a", "--leader-elect=true", "--v=2")
	code, body := waitReadyz(t, leader, func(code int) bool { return code == http.StatusInternalServerError })
	if !strings.Contains(body, "vip-ccm failed") {
		t.Errorf("503 without the failing check's name:\n%s", body)
	}
	t.Logf("API server away: /readyz %d", code)

	restart := time.Now()
	if err := h.Env.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	// Until its authorizer has read the roles, a restarted API server
	// refuses vip-ccm's (immediately retried) requests.
	leader.ExpectRBACDenials(restart, time.Now().Add(10*time.Second))
	waitReadyz(t, leader, func(code int) bool { return code == http.StatusOK })
	if !leader.LogContains("Controllers run on synced informers") {
		t.Error("ready before the controllers ran on synced informers")
	}
	// Ready as leader: it serves Services.
	create(t, h.Admin, LBService("default", "ready"))
	waitIP(t, h.Admin, "default", "ready")

	standby := h.StartCCM("vip-ccm-b", "--leader-elect=true", "--v=2")
	waitReadyz(t, standby, func(code int) bool { return code == http.StatusOK })
	l, err := h.Admin.CoordinationV1().Leases("kube-system").Get(ctx, "vip-ccm", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if standby.LogContains("Controllers run on synced informers") || standby.LogContains("successfully acquired lease") {
		t.Errorf("the second instance leads (Lease holder %q)", *l.Spec.HolderIdentity)
	}
	if exited, err := leader.Exited(); exited {
		t.Fatalf("the leader exited: %v", err)
	}
}

// waitReadyz polls /readyz?verbose until done accepts the status code
// (connection errors are retried: the port opens once vip-ccm has read its
// configuration).
func waitReadyz(t *testing.T, c *CCM, done func(code int) bool) (int, string) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // self-signed serving cert
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	deadline := time.Now().Add(2 * time.Minute)
	var last string
	for time.Now().Before(deadline) {
		if exited, err := c.Exited(); exited {
			t.Fatalf("%s exited: %v", c.Name, err)
		}
		resp, err := client.Get(fmt.Sprintf("https://127.0.0.1:%d/readyz?verbose", c.Port))
		if err != nil {
			last = err.Error()
		} else {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = fmt.Sprintf("%s: %s", resp.Status, b)
			if done(resp.StatusCode) {
				return resp.StatusCode, string(b)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s /readyz: last answer %s", c.Name, last)
	return 0, ""
}
