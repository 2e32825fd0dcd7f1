package liveness

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Kind is a packet's type.
type Kind uint8

// Packet kinds.
const (
	// KindBeat is a heartbeat: the sender is alive and watches the
	// receiver, which answers with heartbeats (KindReply unless it watches
	// the sender too).
	KindBeat Kind = 1
	// KindNotice tells the receiver what the sender believes about Subject.
	KindNotice Kind = 2
	// KindSuspect asks the receiver whether it heard Subject after the
	// stamp (SubjectInc, SubjectSeq): the sender has not, for its timeout.
	// Subject refutes it; a member that heard Subject since answers with an
	// alive notice.
	KindSuspect Kind = 3
	// KindReply is a heartbeat answering KindBeats: the sender is alive; it
	// asks for no answer, so two nodes never keep each other talking once
	// neither watches the other.
	KindReply Kind = 4
)

// Wire format (big endian):
//
//	"VIPL" | version 1 | kind | len(from) | from | incarnation u64 | seq u64 |
//	sent unix ms i64 | [notice, suspect: len(subject) | subject | alive u8 |
//	subject incarnation u64 | subject seq u64] | HMAC-SHA256 of all before
const (
	magic      = "VIPL"
	version    = 1
	macLen     = sha256.Size
	maxName    = 253
	headerLen  = len(magic) + 3
	fixedLen   = 24
	noticeLen  = 17
	MaxPacket  = headerLen + maxName + fixedLen + 1 + maxName + noticeLen + macLen
	minKeySize = 16
)

// Errors of Parse, checked with errors.Is.
var (
	// ErrMalformed: the packet is not a well-formed liveness packet.
	ErrMalformed = errors.New("malformed liveness packet")
	// ErrBadMAC: the packet was not signed with our key.
	ErrBadMAC = errors.New("liveness packet fails authentication")
	// ErrShortKey: the key is too short to authenticate anything.
	ErrShortKey = errors.New("liveness key shorter than 16 bytes")
)

// Packet is one heartbeat or notice.
type Packet struct {
	Kind Kind
	// From is the sending node; Incarnation (its start, unix ns) and Seq
	// (increasing per packet) order its packets.
	From        string
	Incarnation uint64
	Seq         uint64
	// SentUnixMilli is the sender's wall clock, checked only coarsely.
	SentUnixMilli int64
	// Notice fields: what From believes about Subject, as of Subject's
	// packet (SubjectInc, SubjectSeq).
	Subject    string
	Alive      bool
	SubjectInc uint64
	SubjectSeq uint64
}

// Marshal encodes p and signs it with key.
func (p Packet) Marshal(key []byte) ([]byte, error) {
	if len(key) < minKeySize {
		return nil, ErrShortKey
	}
	if p.From == "" || len(p.From) > maxName || len(p.Subject) > maxName {
		return nil, fmt.Errorf("%w: name length", ErrMalformed)
	}
	if !p.Kind.beat() && !p.Kind.aboutSubject() {
		return nil, fmt.Errorf("%w: kind %d", ErrMalformed, p.Kind)
	}
	if p.Kind.aboutSubject() && p.Subject == "" {
		return nil, fmt.Errorf("%w: notice without subject", ErrMalformed)
	}
	b := make([]byte, 0, MaxPacket)
	b = append(b, magic...)
	b = append(b, version, byte(p.Kind), byte(len(p.From)))
	b = append(b, p.From...)
	b = binary.BigEndian.AppendUint64(b, p.Incarnation)
	b = binary.BigEndian.AppendUint64(b, p.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(p.SentUnixMilli))
	if p.Kind.aboutSubject() {
		b = append(b, byte(len(p.Subject)))
		b = append(b, p.Subject...)
		alive := byte(0)
		if p.Alive {
			alive = 1
		}
		b = append(b, alive)
		b = binary.BigEndian.AppendUint64(b, p.SubjectInc)
		b = binary.BigEndian.AppendUint64(b, p.SubjectSeq)
	}
	return append(b, sign(key, b)...), nil
}

// beat reports whether packets of kind k are heartbeats.
func (k Kind) beat() bool { return k == KindBeat || k == KindReply }

// aboutSubject reports whether packets of kind k name a subject.
func (k Kind) aboutSubject() bool { return k == KindNotice || k == KindSuspect }

// sign is the HMAC-SHA256 of b under key.
func sign(key, b []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(b)
	return h.Sum(nil)
}

// Parse authenticates b with key and decodes it. Nothing in b is trusted
// before the MAC checks out; trailing bytes are refused.
func Parse(b, key []byte) (Packet, error) {
	var p Packet
	if len(key) < minKeySize {
		return p, ErrShortKey
	}
	if len(b) < headerLen+1+fixedLen+macLen || len(b) > MaxPacket {
		return p, fmt.Errorf("%w: length %d", ErrMalformed, len(b))
	}
	body, mac := b[:len(b)-macLen], b[len(b)-macLen:]
	if !hmac.Equal(mac, sign(key, body)) {
		return p, ErrBadMAC
	}
	if string(body[:len(magic)]) != magic || body[len(magic)] != version {
		return p, fmt.Errorf("%w: magic or version", ErrMalformed)
	}
	p.Kind = Kind(body[len(magic)+1])
	r := body[len(magic)+2:]
	var ok bool
	if p.From, r, ok = name(r); !ok || p.From == "" || len(r) < fixedLen {
		return Packet{}, fmt.Errorf("%w: sender", ErrMalformed)
	}
	p.Incarnation = binary.BigEndian.Uint64(r)
	p.Seq = binary.BigEndian.Uint64(r[8:])
	p.SentUnixMilli = int64(binary.BigEndian.Uint64(r[16:]))
	r = r[fixedLen:]
	switch p.Kind {
	case KindBeat, KindReply:
	case KindNotice, KindSuspect:
		if p.Subject, r, ok = name(r); !ok || p.Subject == "" || len(r) < noticeLen || r[0] > 1 {
			return Packet{}, fmt.Errorf("%w: notice", ErrMalformed)
		}
		p.Alive = r[0] == 1
		p.SubjectInc = binary.BigEndian.Uint64(r[1:])
		p.SubjectSeq = binary.BigEndian.Uint64(r[9:])
		r = r[noticeLen:]
	default:
		return Packet{}, fmt.Errorf("%w: kind %d", ErrMalformed, p.Kind)
	}
	if len(r) != 0 {
		return Packet{}, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(r))
	}
	return p, nil
}

// name reads a length-prefixed name.
func name(r []byte) (string, []byte, bool) {
	if len(r) < 1 || int(r[0]) > len(r)-1 {
		return "", r, false
	}
	n := int(r[0])
	return string(r[1 : 1+n]), r[1+n:], true
}

// version is an ordered (incarnation, sequence) pair.
type stamp struct{ inc, seq uint64 }

// after reports whether s is newer than o.
func (s stamp) after(o stamp) bool {
	return s.inc > o.inc || (s.inc == o.inc && s.seq > o.seq)
}
