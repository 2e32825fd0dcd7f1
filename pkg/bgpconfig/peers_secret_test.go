package bgpconfig

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// peerFields and peerProblems are every Field and Problem a PeerError may
// carry: its text is made of these and the position, nothing else.
var (
	peerFields   = []string{"address", "AS", "password", "multihop", "port", "field 6", "field 7", "entry"}
	peerProblems = []string{problemNoBracket, problemBadIPv6, problemIPv4Bracket, problemAfterBrack, problemNeedBracket,
		problemBadAddr, problemNoAS, problemBadAS, problemBadMultihop, problemBadPort, problemBFD, problemMPBGP,
		problemTooMany, problemPwLong, "not a usable peer", "a zoned address is not supported", "not a unicast address"}
)

// mayAppear reports whether s is part of some message a PeerError at pos can
// have: such a password cannot be told apart from the fixed words.
func mayAppear(s string, pos int) bool {
	for _, f := range peerFields {
		for _, p := range peerProblems {
			if strings.Contains((&PeerError{Position: pos, Field: f, Problem: p}).Error(), s) {
				return true
			}
		}
	}
	return false
}

// TestPeerErrorsHidePassword: the malformed entries that used to leak
// the password through the ':'-splitting redaction.
func TestPeerErrorsHidePassword(t *testing.T) {
	const pw = "Tops3cret"
	tests := []struct{ name, in, field string }{
		{"IPv6 without brackets", "fd00::1:65000:" + pw + ":true", "address"},
		{"missing ]", "[fd00::1:65000:" + pw, "address"},
		{"missing ] with ] in password", "[fd00::1:65000:Top]s3cret", "address"},
		{"colon in password", "10.0.0.1:65000:Tops:3cret:true", "multihop"},
		{"colon in password, IPv6", "[fd00::1]:65000:Tops:3cret", "multihop"},
		{"bad AS before password", "10.0.0.1:x:" + pw, "AS"},
		{"second entry", "10.0.0.2:1,10.0.0.1:65000:" + pw + ":maybe", "multihop"},
		{"password in port field", "10.0.0.1:1::true:" + pw, "port"},
		{"password too long", "10.0.0.1:1:" + strings.Repeat(pw, 10), "password"},
		{"comma in password", "10.0.0.1:1:Tops,3cret:true", "address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePeers(tt.in)
			var pe *PeerError
			if !errors.As(err, &pe) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParsePeers: %v, want a *PeerError wrapping ErrInvalid", err)
			}
			if pe.Field != tt.field {
				t.Errorf("field %q, want %q (%v)", pe.Field, tt.field, err)
			}
			for _, part := range []string{"Tops", "3cret", "s3c"} {
				if strings.Contains(err.Error(), part) {
					t.Errorf("error %q shows part of the password (%q)", err, part)
				}
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("peer %d:", pe.Position)) || pe.Position == 0 {
				t.Errorf("error %q does not name the peer's position", err)
			}
			// The same through a Node annotation.
			_, _, aerr := FromAnnotations("p", map[string]string{"p/" + KeyPeers: tt.in})
			if aerr == nil || strings.Contains(aerr.Error(), "Tops") || strings.Contains(aerr.Error(), "3cret") {
				t.Errorf("annotation error %v shows the password", aerr)
			}
		})
	}
}

// FuzzPeerErrorsHidePassword puts pw in the password field of an entry
// between arbitrary text and checks that a refusal is a PeerError made of
// fixed words only, and that its text contains no password longer than two
// bytes (unless the password is itself a piece of those fixed words). The
// same for the password given by annotation.
func FuzzPeerErrorsHidePassword(f *testing.F) {
	for _, s := range [][4]string{
		{"fd00::1", "65000", "secret", ":true"},
		{"[fd00::1", "65000", "sec]ret", ""},
		{"10.0.0.1", "65000", "sec:ret", ":true"},
		{"[fd00::1]", "x", "secret", ""},
		{"10.0.0.1", "1", "secret", "::0"},
		{"10.0.0.1", "1", "sec,ret", "::0"},
		{"10.0.0.2:1,10.0.0.1", "1", "secret", ":maybe"},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, addr, as, pw, tail string) {
		in := addr + ":" + as + ":" + pw + tail
		_, err := ParsePeers(in)
		if err != nil {
			var pe *PeerError
			if !errors.As(err, &pe) {
				t.Fatalf("ParsePeers(%q): %v is not a *PeerError", in, err)
			}
			want := (&PeerError{Position: pe.Position, Field: pe.Field, Problem: pe.Problem}).Error()
			if !containsString(peerProblems, pe.Problem) || !containsString(peerFields, pe.Field) || err.Error() != want {
				t.Fatalf("ParsePeers(%q): error %q is not made of fixed words", in, err)
			}
			if len(pw) > 2 && strings.Contains(err.Error(), pw) && !mayAppear(pw, pe.Position) {
				t.Fatalf("ParsePeers(%q): error %q contains the password %q", in, err, pw)
			}
		}
		// Through Node annotations, with a password that starts with a NUL
		// byte: no fixed word has one, and values quoted with %q show it
		// escaped, so a NUL in the error text can only be the password.
		clean := func(v string) string { return strings.ReplaceAll(v, "\x00", "") }
		addr, as, tail = clean(addr), clean(as), clean(tail)
		mpw := "\x00" + strings.NewReplacer(",", "", ":", "").Replace(pw)
		entry := addr + ":" + as + ":" + mpw + tail
		ann := map[string]string{
			"p/" + KeyPeers: entry, "p/" + KeyNodeASN: as, "p/" + KeySourceIP: addr,
			"p/" + KeyPeerIP: addr, "p/" + KeyPeerASN: as, "p/" + KeyPassword: base64.StdEncoding.EncodeToString([]byte(mpw)),
		}
		if _, _, err := FromAnnotations("p", ann); err != nil && strings.Contains(err.Error(), "\x00") {
			t.Fatalf("FromAnnotations(%q): error %q contains the password", entry, err)
		}
	})
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
