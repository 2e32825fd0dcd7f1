package liveness

import (
	"bytes"
	"errors"
	"testing"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

func TestPacketRoundTrip(t *testing.T) {
	for _, p := range []Packet{
		{Kind: KindBeat, From: "node1", Incarnation: 7, Seq: 9, SentUnixMilli: 1234},
		{Kind: KindReply, From: "node2", Incarnation: 7, Seq: 10, SentUnixMilli: 1235},
		{Kind: KindNotice, From: "node2", Incarnation: 1, Seq: 2, SentUnixMilli: -5, Subject: "node3", Alive: true, SubjectInc: 3, SubjectSeq: 4},
		{Kind: KindSuspect, From: "node1", Incarnation: 5, Seq: 6, SentUnixMilli: 7, Subject: "node2", SubjectInc: 8, SubjectSeq: 9},
		{Kind: KindNotice, From: string(bytes.Repeat([]byte("a"), maxName)), Subject: string(bytes.Repeat([]byte("b"), maxName))},
	} {
		b, err := p.Marshal(testKey)
		if err != nil {
			t.Fatalf("marshal %+v: %v", p, err)
		}
		got, err := Parse(b, testKey)
		if err != nil || got != p {
			t.Fatalf("parse: got %+v, %v; want %+v", got, err, p)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	good, err := Packet{Kind: KindBeat, From: "node1", Seq: 1}.Marshal(testKey)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(good)
	flipped[len(magic)+4] ^= 1
	other, _ := Packet{Kind: KindBeat, From: "node1", Seq: 1}.Marshal([]byte("another key of 16+ bytes"))
	badKind, _ := Packet{Kind: KindBeat, From: "node1"}.Marshal(testKey)
	badKind[len(magic)+1] = 9
	badKind = append(badKind[:len(badKind)-macLen], sign(testKey, badKind[:len(badKind)-macLen])...)
	trailing := append(bytes.Clone(good[:len(good)-macLen]), 0)
	trailing = append(trailing, sign(testKey, trailing)...)
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"short", good[:10], ErrMalformed},
		{"flipped bit", flipped, ErrBadMAC},
		{"other key", other, ErrBadMAC},
		{"unknown kind, signed", badKind, ErrMalformed},
		{"trailing byte, signed", trailing, ErrMalformed},
		{"too long", make([]byte, MaxPacket+1), ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse(tc.b, testKey); !errors.Is(err, tc.want) {
				t.Fatalf("Parse = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := Parse(good, []byte("short")); !errors.Is(err, ErrShortKey) {
		t.Fatalf("short key: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	beat, _ := Packet{Kind: KindBeat, From: "n", Seq: 1}.Marshal(testKey)
	notice, _ := Packet{Kind: KindNotice, From: "n", Subject: "m", Alive: true}.Marshal(testKey)
	f.Add(beat)
	f.Add(notice)
	f.Add([]byte("VIPL"))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Unsigned input must never parse; signed input must round-trip.
		if p, err := Parse(b, testKey); err == nil {
			again, err := p.Marshal(testKey)
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("accepted packet does not round-trip: %v", err)
			}
		}
		if len(b) > macLen {
			body := b[:len(b)-macLen]
			signed := append(bytes.Clone(body), sign(testKey, body)...)
			if p, err := Parse(signed, testKey); err == nil {
				again, err := p.Marshal(testKey)
				if err != nil || !bytes.Equal(again, signed) {
					t.Fatalf("signed packet %+v does not round-trip: %v", p, err)
				}
			}
		}
	})
}
