// Package agent is vip-agent's Service loop: informers feed one workqueue,
// and a level-triggered reconcile per Service decides, through the elector,
// whether this node announces the Service's addresses, and tells the
// announcer. It reads Services and never writes them. It knows nothing about
// packets or BGP messages; those are the announcers' business.
package agent
