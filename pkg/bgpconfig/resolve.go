package bgpconfig

// Resolve lays node settings (nil: none) and passwords over base, keeps the
// peers whose node selectors match nodeLabels, and checks the result: the
// configuration one node's speaker runs with.
func Resolve(base Config, pw Passwords, node *NodeSettings, sel PeerSelectors, nodeLabels map[string]string) (Config, error) {
	c := base
	if node != nil {
		c = node.Apply(base)
	}
	var err error
	if c.Peers, err = pw.Apply(c.Peers); err != nil {
		return c, err
	}
	if len(c.Peers) > 0 {
		c = sel.Select(c, nodeLabels)
	}
	c = c.Normalize()
	return c, c.Validate()
}
