package bgpnode

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"

	"github.com/go-logr/logr"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/vip-lb/vip/pkg/bgpconfig"
)

// Options configure a Watch.
type Options struct {
	// Client reads the Node (a field selector on its name: one object).
	Client kubernetes.Interface
	// Node is this node's name.
	Node string
	// Prefix is the annotation prefix (kube-vip's "annotation" setting,
	// e.g. kube-vip.io); "" reads no annotations, only labels.
	Prefix string
	// Base is the configuration the flags give, Passwords the password
	// file's and Selectors the peer node selectors.
	Base      bgpconfig.Config
	Passwords bgpconfig.Passwords
	Selectors bgpconfig.PeerSelectors
	// Logger and Recorder report; the Recorder's Events go on the Node.
	Logger   logr.Logger
	Recorder record.EventRecorder
}

// Watch follows this node's BGP annotations (under prefix, when set)
// and its labels (for peer node selectors).
type Watch struct {
	client       kubernetes.Interface
	node, prefix string
	base         bgpconfig.Config
	pw           bgpconfig.Passwords
	sel          bgpconfig.PeerSelectors
	log          logr.Logger
	rec          record.EventRecorder
	informer     cache.SharedIndexInformer
	factory      informers.SharedInformerFactory
	changed      chan struct{}
	lastErr      string
	current      bgpconfig.Config
	// warnedUnknown is set once selectors for non-peers were reported.
	warnedUnknown bool
	// warnedPassword is set once passwords read from annotations were
	// reported.
	warnedPassword bool
}

// New returns a Watch; Start begins it.
func New(o Options) *Watch {
	f := informers.NewSharedInformerFactoryWithOptions(o.Client, 0, informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
		lo.FieldSelector = "metadata.name=" + o.Node
	}))
	w := &Watch{client: o.Client, node: o.Node, prefix: o.Prefix, base: o.Base, pw: o.Passwords, sel: o.Selectors,
		log: o.Logger, rec: o.Recorder, factory: f, informer: f.Core().V1().Nodes().Informer(), changed: make(chan struct{}, 1)}
	poke := func(any) {
		select {
		case w.changed <- struct{}{}:
		default:
		}
	}
	_, _ = w.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: poke, UpdateFunc: func(_, o any) { poke(o) }, DeleteFunc: poke})
	return w
}

// ErrNodeNotFound: the Node of this agent is not in the API server.
var ErrNodeNotFound = errors.New("not found")

// resolve computes the configuration from the node's current annotations
// and labels.
func (w *Watch) resolve() (bgpconfig.Config, error) {
	obj, ok, err := w.informer.GetStore().GetByKey(w.node)
	if err != nil || !ok {
		return bgpconfig.Config{}, fmt.Errorf("node %s %w", w.node, ErrNodeNotFound)
	}
	n := obj.(*v1.Node)
	s, found, err := bgpconfig.FromAnnotations(w.prefix, n.Annotations)
	if err != nil {
		return bgpconfig.Config{}, err
	}
	var node *bgpconfig.NodeSettings
	if found {
		node = &s
		if !w.warnedPassword && slices.ContainsFunc(s.Peers, func(p bgpconfig.Peer) bool { return p.Password != "" }) {
			w.warnedPassword = true
			WarnPlainPasswords(w.log, w.rec, w.node, []string{"Node annotations under " + w.prefix + "/"})
		}
	}
	c, err := bgpconfig.Resolve(w.base, w.pw, node, w.sel, n.Labels)
	if err == nil {
		if unknown := w.sel.Unknown(append(slices.Clone(c.Peers), peersOf(c.Deselected)...)); len(unknown) > 0 && !w.warnedUnknown {
			w.warnedUnknown = true
			w.log.Info("peer node selectors name addresses that are not peers", "addresses", unknown)
		}
	}
	return c, err
}

func peersOf(addrs []netip.Addr) []bgpconfig.Peer {
	out := make([]bgpconfig.Peer, len(addrs))
	for i, a := range addrs {
		out[i] = bgpconfig.Peer{Address: a}
	}
	return out
}

// logSelection says which peers this node's labels select.
func (w *Watch) logSelection(what string, c bgpconfig.Config) {
	if len(w.sel) == 0 {
		return
	}
	peers := make([]string, len(c.Peers))
	for i, p := range c.Peers {
		peers[i] = p.Key()
	}
	w.log.Info(what, "peers", peers, "deselected", c.Deselected, "selectors", w.sel.String())
	if len(c.Peers) == 0 {
		w.rec.Eventf(Ref(w.node), v1.EventTypeNormal, ReasonNoPeers, "no BGP peer selects this node (%s): it advertises nothing", w.sel.String())
	}
}

func (w *Watch) report(err error) {
	if err.Error() == w.lastErr {
		return
	}
	w.lastErr = err.Error()
	w.log.Info("BGP settings from the node's annotations are not usable", "prefix", w.prefix, "err", err.Error())
	if w.prefix == "" {
		w.rec.Eventf(Ref(w.node), v1.EventTypeWarning, ReasonConfigInvalid, "BGP settings for this node: %v", err)
		return
	}
	w.rec.Eventf(Ref(w.node), v1.EventTypeWarning, ReasonConfigInvalid, "BGP annotations under %s/: %v", w.prefix, err)
}

// Start waits until the node's annotations, laid over the flags, give a
// complete configuration (as kube-vip does), and returns it.
func (w *Watch) Start(ctx context.Context) (bgpconfig.Config, error) {
	w.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), w.informer.HasSynced) {
		return bgpconfig.Config{}, fmt.Errorf("waiting for node %s: %w", w.node, ctx.Err())
	}
	for {
		c, err := w.resolve()
		if err == nil {
			w.current, w.lastErr = c, ""
			if w.prefix != "" {
				w.log.Info("BGP settings read from node annotations", "prefix", w.prefix, "as", c.AS, "routerID", c.RouterID, "peers", len(c.Peers))
			}
			w.logSelection("BGP peers selected by node labels", c)
			return c, nil
		}
		w.report(err)
		select {
		case <-ctx.Done():
			return bgpconfig.Config{}, ctx.Err()
		case <-w.changed:
		}
	}
}

// Follow applies annotation changes until ctx ends; a bad change keeps the
// last good configuration.
func (w *Watch) Follow(ctx context.Context, apply func(context.Context, bgpconfig.Config) error) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.changed:
		}
		c, err := w.resolve()
		if err != nil {
			w.report(err)
			continue
		}
		w.lastErr = ""
		if reflect.DeepEqual(c, w.current) {
			continue
		}
		if err := apply(ctx, c); err != nil {
			w.report(err)
			continue
		}
		old := w.current
		w.current = c
		w.log.Info("BGP settings changed by the node's annotations or labels", "as", c.AS, "routerID", c.RouterID, "peers", len(c.Peers))
		if !reflect.DeepEqual(old.Peers, c.Peers) {
			w.logSelection("BGP peers selected by node labels changed", c)
		}
	}
}
