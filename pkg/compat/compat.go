// Package compat lists every input of kube-vip and kube-vip-cloud-provider
// (environment variables, command-line and generator flags, Service
// annotations, pools ConfigMap keys) and what vip does with each: honours
// it, accepts it as already true of vip's design, refuses it at start, or
// answers it with a Warning Event. The agent's refusals, the generator's
// kube-vip flags, vip-ccm's UnsupportedAnnotation Events and the table in
// docs/migration.md all come from this one list.
package compat

import (
	"sort"
	"strconv"
	"strings"
)

// Status is what vip does with an input.
type Status string

// The statuses.
const (
	// Honoured: vip reads it with the same meaning.
	Honoured Status = "honoured"
	// Accepted: read and checked; what it asks for is already how vip
	// works (or it only names kube-vip internals), so it changes nothing.
	Accepted Status = "accepted"
	// Refused: setting it to anything but its harmless value stops the
	// program at start with one line naming it.
	Refused Status = "refused"
	// Event: a Service carrying it gets a Warning Event
	// UnsupportedAnnotation from vip-ccm; the rest of the Service is served.
	Event Status = "Event"
)

// Kind is the sort of input.
type Kind string

// The kinds.
const (
	Env        Kind = "kube-vip environment variable"
	Flag       Kind = "kube-vip flag (manager and manifest generator)"
	Annotation Kind = "Service annotation"
	ConfigKey  Kind = "pools ConfigMap key"
	CCMEnv     Kind = "kube-vip-cloud-provider environment variable"
	CCMFlag    Kind = "kube-vip-cloud-provider flag"
)

// Input is one kube-vip input.
type Input struct {
	Kind   Kind
	Name   string
	Status Status
	// Vip is the vip flag an honoured input sets, if it maps to one.
	Vip string
	// Note says how, or why not, in a few words.
	Note string
	// Harmless lists the values of a Refused input that ask for nothing
	// vip lacks (kube-vip's default). Empty always is, and boolean false
	// when the list is empty.
	Harmless []string
	// Bool marks a boolean flag (Kind Flag).
	Bool bool
}

// HarmlessValue reports whether v asks for nothing vip lacks.
func (in Input) HarmlessValue(v string) bool {
	v = strings.TrimSpace(v)
	if v == "" {
		return true
	}
	if b, err := strconv.ParseBool(v); err == nil && !b && len(in.Harmless) == 0 {
		return true
	}
	for _, h := range in.Harmless {
		if strings.EqualFold(v, h) {
			return true
		}
	}
	return false
}

// Of returns the inputs of kind k, sorted by name.
func Of(k Kind) []Input {
	var out []Input
	for _, in := range inputs {
		if in.Kind == k {
			out = append(out, in)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Lookup returns the input of kind k named name.
func Lookup(k Kind, name string) (Input, bool) {
	for _, in := range inputs {
		if in.Kind == k && in.Name == name {
			return in, true
		}
	}
	return Input{}, false
}

// All returns every input, grouped by kind in table order, sorted by name.
func All() []Input {
	var out []Input
	for _, k := range Kinds {
		out = append(out, Of(k)...)
	}
	return out
}

// Kinds in the order of the compatibility table.
var Kinds = []Kind{Env, Flag, Annotation, ConfigKey, CCMEnv, CCMFlag}

// UnsupportedAnnotations returns the Service annotations vip-ccm answers
// with an UnsupportedAnnotation Warning, and for each the reason. Keys that
// end in "*" are prefixes.
func UnsupportedAnnotations() map[string]string {
	out := map[string]string{}
	for _, in := range Of(Annotation) {
		if in.Status == Event {
			out[in.Name] = in.Note
		}
	}
	return out
}
