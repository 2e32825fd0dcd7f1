package agentapp

import (
	"sync"

	"github.com/go-logr/logr"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/record"
)

// missingEventsRule is the line an agent without the events rule logs (kube-vip's
// own RBAC has none): every Warning it records is then dropped, and client-go
// alone only says "Server rejected event".
const missingEventsRule = `missing RBAC rule: apiGroups [""] resources [events] verbs [create, patch] for this agent's ServiceAccount ` +
	`(granted by ClusterRole vip-agent in deploy/agent/rbac.yaml): this agent's Events and Warnings are dropped, see its log instead`

// forbiddenSink passes Events to its sink and says once, naming the rule,
// when the API server refuses them.
type forbiddenSink struct {
	record.EventSink
	log  logr.Logger
	once sync.Once
}

func (s *forbiddenSink) check(err error) {
	if apierrors.IsForbidden(err) {
		s.once.Do(func() { s.log.Error(err, missingEventsRule, "resource", "events") })
	}
}

// Create implements record.EventSink.
func (s *forbiddenSink) Create(e *v1.Event) (*v1.Event, error) {
	out, err := s.EventSink.Create(e)
	s.check(err)
	return out, err
}

// Update implements record.EventSink.
func (s *forbiddenSink) Update(e *v1.Event) (*v1.Event, error) {
	out, err := s.EventSink.Update(e)
	s.check(err)
	return out, err
}

// Patch implements record.EventSink.
func (s *forbiddenSink) Patch(e *v1.Event, data []byte) (*v1.Event, error) {
	out, err := s.EventSink.Patch(e, data)
	s.check(err)
	return out, err
}
