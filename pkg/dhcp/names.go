package dhcp

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"strings"
)

// LinkPrefix starts the name of every macvlan this package creates; Cleanup
// removes links with this prefix that no running client holds.
const LinkPrefix = "vipd"

// maxLinkName is IFNAMSIZ - 1.
const maxLinkName = 15

func digest(key string) []byte {
	s := sha256.Sum256([]byte("vip-dhcp\x00" + key))
	return s[:]
}

// MAC derives the macvlan's hardware address from key: locally administered,
// unicast, and the same on every node.
func MAC(key string) net.HardwareAddr {
	d := digest(key)
	mac := net.HardwareAddr(append([]byte(nil), d[:6]...))
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

// LinkName derives the macvlan's name from key: LinkPrefix and 11 hex digits.
func LinkName(key string) string { return linkName(LinkPrefix, key) }

// linkName is prefix (4 characters) and 11 hex digits of key's digest.
func linkName(prefix, key string) string {
	return prefix + hex.EncodeToString(digest(key))[:maxLinkName-len(prefix)]
}

// ClientID is the DHCP client identifier (option 61) sent with mac:
// hardware type 1 (Ethernet) followed by the address, as most clients do.
func ClientID(mac net.HardwareAddr) []byte {
	return append([]byte{1}, mac...)
}

// isOurs reports whether a link name has the form linkName(prefix, …).
func isOurs(prefix, name string) bool {
	if !strings.HasPrefix(name, prefix) || len(name) != maxLinkName {
		return false
	}
	_, err := hex.DecodeString(name[len(prefix):] + "0")
	return err == nil
}
