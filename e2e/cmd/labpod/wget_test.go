package main

import (
	"errors"
	"testing"
	"time"
)

func TestParseWget(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    wgetArgs
		wantErr bool
	}{
		// upstream's checkReachabilityFromPod and verifyServeHostnameServiceUp
		{args: []string{"-T", "5", "-qO-", "10.98.0.200:80"}, want: wgetArgs{quiet: true, out: "-", timeout: 5 * time.Second, url: "http://10.98.0.200:80"}},
		{args: []string{"-q", "-O", "-", "-T", "1", "http://10.96.0.5:80/hostname"}, want: wgetArgs{quiet: true, out: "-", timeout: time.Second, url: "http://10.96.0.5:80/hostname"}},
		{args: []string{"-T5", "-qO", "out.txt", "http://a/b"}, want: wgetArgs{quiet: true, out: "out.txt", timeout: 5 * time.Second, url: "http://a/b"}},
		{args: []string{"http://a/"}, want: wgetArgs{timeout: 900 * time.Second, url: "http://a/"}},
		{args: []string{"-q", "--", "-odd"}, want: wgetArgs{quiet: true, timeout: 900 * time.Second, url: "http://-odd"}},
		{args: nil, wantErr: true},
		{args: []string{"-T"}, wantErr: true},
		{args: []string{"-T", "x", "a"}, wantErr: true},
		{args: []string{"-S", "a"}, wantErr: true},
		{args: []string{"a", "b"}, wantErr: true},
	} {
		got, err := parseWget(tc.args)
		if tc.wantErr {
			if !errors.Is(err, errUsage) {
				t.Errorf("%q: got %+v, %v; want a usage error", tc.args, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: got %+v, %v; want %+v", tc.args, got, err, tc.want)
		}
	}
}

func FuzzParseWget(f *testing.F) {
	f.Add("-T", "5", "-qO-")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		w, err := parseWget([]string{a, b, c})
		if err == nil && w.url == "" {
			t.Fatalf("no error and no URL for %q %q %q", a, b, c)
		}
	})
}
