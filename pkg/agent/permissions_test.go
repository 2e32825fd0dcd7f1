package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	announcefake "github.com/vip-lb/vip/pkg/announce/fake"
)

// TestMissingPermission: kube-vip's own RBAC has no configmaps rule, the
// Chinese notes' none for endpointslices. A forbidden optional resource
// (the pools ConfigMap) does not stop the agent from syncing; a forbidden
// required one keeps it unsynced (so never a candidate). Each gets one log
// line and one Warning naming the rule and deploy/agent/rbac.yaml.
func TestMissingPermission(t *testing.T) {
	for _, tc := range []struct {
		resource string
		synced   bool
	}{
		{"configmaps", true},
		{"endpointslices", false},
	} {
		t.Run(tc.resource, func(t *testing.T) {
			client := fake.NewClientset()
			client.PrependReactor("list", tc.resource, func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: tc.resource}, "", nil)
			})
			rec := record.NewFakeRecorder(10)
			a, err := New(Options{Client: client, NodeName: "n1", Mode: ModeBGP, Announcer: announcefake.New(), Recorder: rec})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); _ = a.Run(ctx) }()
			defer func() { cancel(); <-done }()
			var ev string
			select {
			case ev = <-rec.Events:
			case <-time.After(time.Minute):
				t.Fatal("no Event about the missing rule")
			}
			if !strings.Contains(ev, "Warning "+ReasonMissingPermission) || !strings.Contains(ev, tc.resource) || !strings.Contains(ev, "deploy/agent/rbac.yaml") {
				t.Fatalf("Event %q", ev)
			}
			if tc.synced {
				deadline := time.Now().Add(time.Minute)
				for !a.Synced() {
					if time.Now().After(deadline) {
						t.Fatal("a forbidden pools ConfigMap stalled the agent")
					}
					time.Sleep(10 * time.Millisecond)
				}
			} else if a.Synced() {
				t.Fatal("synced without EndpointSlices")
			}
		})
	}
}
