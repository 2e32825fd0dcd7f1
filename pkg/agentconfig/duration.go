package agentconfig

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SecondsOrDuration is a lease timing given as kube-vip's whole seconds
// ("5") or as a Go duration ("1500ms").
type SecondsOrDuration struct{ D *time.Duration }

func (v SecondsOrDuration) String() string {
	if v.D == nil || *v.D == 0 {
		return ""
	}
	return v.D.String()
}

func (v SecondsOrDuration) Set(s string) error {
	d, err := ParseSecondsOrDuration(s)
	if err != nil {
		return err
	}
	*v.D = d
	return nil
}

func (v SecondsOrDuration) Type() string { return "duration" }

// ParseSecondsOrDuration reads "5" as five seconds and "1.5s" or "1500ms"
// as Go durations; the result must be positive.
func ParseSecondsOrDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var d time.Duration
	if n, err := strconv.ParseInt(s, 10, 32); err == nil {
		d = time.Duration(n) * time.Second
	} else if d, err = time.ParseDuration(s); err != nil {
		return 0, fmt.Errorf("%q is neither whole seconds nor a duration such as 1500ms", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q is not positive", s)
	}
	return d, nil
}
