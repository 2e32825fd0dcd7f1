package manifest

import (
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/vip-lb/vip/pkg/agentconfig"
)

// formRBAC is `vip-agent manifest rbac`: the agent's RBAC alone.
const formRBAC Form = "rbac"

// checkWithAgent runs the agent's own configuration checks on the
// environment and arguments the manifest gives the container, so a
// manifest the agent would refuse at start is refused here, by the same
// rules. Values only a node knows are stood in for: the node name, and a
// router ID for --bgpRouterInterface (192.0.2.1, a documentation address,
// only ever parsed); mounted files are not read.
func checkWithAgent(form Form, o Options) error {
	objs, err := Objects(form, o)
	if err != nil {
		return err
	}
	var c *corev1.Container
	for _, obj := range objs {
		switch v := obj.(type) {
		case *corev1.Pod:
			c = &v.Spec.Containers[0]
		case *appsv1.DaemonSet:
			c = &v.Spec.Template.Spec.Containers[0]
		}
	}
	if c == nil {
		return nil
	}
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	if _, ok := env["bgp_routerinterface"]; ok {
		delete(env, "bgp_routerinterface")
		env["bgp_routerid"] = "192.0.2.1"
	}
	var args []string
	for _, a := range c.Args {
		if !strings.HasPrefix(a, "--bgp-password-file") {
			args = append(args, a)
		}
	}
	if err := agentconfig.CheckContainer(args, env, "generator-check"); err != nil {
		return fmt.Errorf("the agent would refuse this manifest: %w", err)
	}
	return nil
}
