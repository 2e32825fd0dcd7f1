package agent

import (
	"context"

	"github.com/vip-lb/vip/pkg/election"
)

// electorAdapter fits *election.Elector to the Elector interface.
type electorAdapter struct{ *election.Elector }

// FromElection adapts the per-Service elector for the agent.
func FromElection(e *election.Elector) Elector { return electorAdapter{e} }

func (e electorAdapter) Ensure(ctx context.Context, namespace, leaseName, serviceKey string, candidates []string) (Decision, error) {
	r, err := e.Elector.Ensure(ctx, namespace, leaseName, serviceKey, candidates)
	if err != nil {
		return Decision{}, err
	}
	d := Decision{
		Announce:     r.ShouldAnnounce,
		Holder:       r.Holder,
		Changed:      r.Change != election.None,
		Reason:       r.Reason,
		RequeueAfter: r.RequeueAfter,
		Fresh:        r.Fresh,
	}
	if r.Release {
		d.HandOffTo = r.Successor
		if d.HandOffTo == "" {
			d.HandOffTo = releaseToNobody
		}
	}
	return d, nil
}

func (e electorAdapter) Release(ctx context.Context, namespace, leaseName, successor string) error {
	if successor == releaseToNobody {
		successor = ""
	}
	return e.Elector.Release(ctx, namespace, leaseName, successor)
}

// releaseToNobody marks a hand-off without a successor.
const releaseToNobody = "\x00nobody"
