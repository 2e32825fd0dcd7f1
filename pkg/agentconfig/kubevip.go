package agentconfig

import "github.com/spf13/pflag"

// KubeVipCommand strips the sub-command word of kube-vip's manifests
// ("manager", "service", "start"): vip has one program, so the words are
// accepted. It reports whether the word was "start", kube-vip's
// control-plane command: the static Pod of kube-vip's control-plane docs
// runs `start` with vip_address and no cp_enable.
func KubeVipCommand(args []string) (rest []string, start bool) {
	for len(args) > 0 && (args[0] == "manager" || args[0] == "service" || args[0] == "start") {
		start = start || args[0] == "start"
		args = args[1:]
	}
	return args, start
}

// ApplyStart turns the control plane on for kube-vip's `start` command
// unless --controlplane (cp_enable) was given; call it after the command
// line and the environment are applied. It reports whether it did.
func ApplyStart(fs *pflag.FlagSet, start bool) (bool, error) {
	fl := fs.Lookup("controlplane")
	if !start || fl == nil || fl.Changed {
		return false, nil
	}
	if err := fl.Value.Set("true"); err != nil {
		return false, err
	}
	fl.Changed = true
	return true, nil
}
