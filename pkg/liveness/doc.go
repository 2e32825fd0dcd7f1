// Package liveness tells, on the link the layer 2 addresses live on, which
// nodes are alive, without the API server.
//
// Each agent sends a small authenticated UDP heartbeat (HMAC-SHA256 with a
// key shared by the cluster, from a Secret) every Interval to its ring
// neighbours only: the Neighbours nodes after it and the Neighbours nodes
// before it on a ring of the members ordered by a hash of their names, plus
// any node that sent to it lately (so a disagreement about the ring never
// leaves a node expecting packets nobody sends). Its cost at rest is 2×
// Neighbours packets sent and received per Interval, whatever the number of
// nodes. A neighbour silent for Timeout, while another one is heard, is
// suspected: the observer asks every member, and one that heard it since
// (or the neighbour itself) clears the suspicion; one nobody clears within
// SuspectFor is dead, and the observer tells every member at once with a
// notice (a few packets per node death, none at rest). An observer whose
// loop ran late or whose socket holds unread datagrams judges nobody until
// it has caught up (suspect.go). A node told it is dead while it is
// alive refutes it; a dead node heard again revives everywhere by a notice
// from whoever hears it first.
//
// A node that hears none of its neighbours while the API server says they
// exist (their membership is fresh) is cut off the link: Connected reports
// false and it must stop announcing. Every packet carries the sender's
// incarnation (its start time) and a sequence number, and the receiver
// keeps, per sender, the highest pair it accepted: forged packets fail the
// HMAC, replayed ones are not newer. The sender's wall clock is only
// checked against the receiver's within MaxSkew (a replay long after the
// fact); freshness is judged on the receiver's own clock.
//
// Membership (who exists, at which address) comes from the caller
// (SetMembers), which reads it from the API at a slow rate.
package liveness
