package webhook

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrPrivateAddress is returned when a webhook URL leads to an address
// Herald refuses to call on a tenant's behalf: loopback, private, link-local,
// multicast or any other special-purpose block (see CheckAddr).
var ErrPrivateAddress = errors.New("webhook: destination is not a public address (private, loopback or special-purpose)")

// addrBlock is one refused block and why.
type addrBlock struct {
	prefix netip.Prefix
	name   string
}

func block(p, name string) addrBlock { return addrBlock{netip.MustParsePrefix(p), name} }

// Refused IPv4 blocks: every entry of the IANA IPv4 Special-Purpose Address
// Registry (as of 2025), the multicast range and the reserved 240/4.
//
// Entries the registry marks globally reachable are refused too: 192.0.0.9
// (PCP) and 192.0.0.10 (TURN) are anycast addresses answered by the nearest,
// usually local, server; AS112 (192.31.196/24, 192.175.48/24) and AMT
// (192.52.193/24) are anycast infrastructure as well. None is a webhook
// receiver, and each may be served inside the operator's network.
var special4 = []addrBlock{
	block("0.0.0.0/8", `"this network" (RFC 791)`),
	block("10.0.0.0/8", "private-use (RFC 1918)"),
	block("100.64.0.0/10", "shared address space / carrier-grade NAT (RFC 6598)"),
	block("127.0.0.0/8", "loopback (RFC 1122)"),
	block("169.254.0.0/16", "link-local (RFC 3927)"),
	block("172.16.0.0/12", "private-use (RFC 1918)"),
	block("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
	block("192.0.2.0/24", "documentation TEST-NET-1 (RFC 5737)"),
	block("192.31.196.0/24", "AS112-v4 anycast (RFC 7535)"),
	block("192.52.193.0/24", "AMT anycast (RFC 7450)"),
	block("192.88.99.0/24", "deprecated 6to4 relay anycast (RFC 7526)"),
	block("192.168.0.0/16", "private-use (RFC 1918)"),
	block("192.175.48.0/24", "AS112 direct delegation (RFC 7534)"),
	block("198.18.0.0/15", "benchmarking (RFC 2544)"),
	block("198.51.100.0/24", "documentation TEST-NET-2 (RFC 5737)"),
	block("203.0.113.0/24", "documentation TEST-NET-3 (RFC 5737)"),
	block("224.0.0.0/4", "multicast (RFC 5771)"),
	block("240.0.0.0/4", "reserved (RFC 1112), including the limited broadcast 255.255.255.255"),
}

// Refused IPv6 blocks: every entry of the IANA IPv6 Special-Purpose Address
// Registry (as of 2025) except the three judged by the IPv4 address they
// embed (::ffff:0:0/96, 64:ff9b::/96, 2002::/16, see CheckAddr), plus the
// deprecated IPv4-compatible (::/96) and site-local (fec0::/10) blocks and
// multicast. Anything outside 2000::/3 (the only block IANA allocates for
// global unicast) is refused as well.
//
// The whole of 2001::/23 is refused, although the registry marks some of
// its sub-blocks globally reachable: 2001:1::1-3 are PCP, TURN and DNS-SD
// anycast addresses answered by the nearest (local) server, 2001:3::/32 is
// AMT and 2001:4:112::/48 AS112 anycast infrastructure, and ORCHIDv2
// (2001:20::/28) and DRIP (2001:30::/28) are identifiers, not locators.
// Teredo (2001::/32) is refused whatever client and server addresses it
// embeds: a Teredo relay would forward to the embedded IPv4 client (which
// may be private), and refusing the tunnel is stricter than checking it.
var special6 = []addrBlock{
	block("::/96", "IPv4-compatible, deprecated (RFC 4291); includes :: and ::1"),
	block("64:ff9b:1::/48", "local-use IPv4/IPv6 translation (RFC 8215)"),
	block("100::/64", "discard-only (RFC 6666)"),
	block("100:0:0:1::/64", "dummy prefix (RFC 9780)"),
	block("2001::/32", "Teredo tunnelling (RFC 4380)"),
	block("2001::/23", "IETF protocol assignments (RFC 2928)"),
	block("2001:db8::/32", "documentation (RFC 3849)"),
	block("2620:4f:8000::/48", "AS112 direct delegation (RFC 7534)"),
	block("3fff::/20", "documentation (RFC 9637)"),
	block("5f00::/16", "SRv6 SIDs (RFC 9602)"),
	block("fc00::/7", "unique local (RFC 4193)"),
	block("fe80::/10", "link-local (RFC 4291)"),
	block("fec0::/10", "site-local, deprecated (RFC 3879)"),
	block("ff00::/8", "multicast (RFC 4291)"),
}

var (
	globalUnicast6 = netip.MustParsePrefix("2000::/3")
	nat64WKP       = netip.MustParsePrefix("64:ff9b::/96") // RFC 6052: IPv4 in the last 32 bits
	sixToFour      = netip.MustParsePrefix("2002::/16")    // RFC 3056: IPv4 in bits 16-47
)

// CheckAddr returns nil if ip is a public unicast address that Herald may
// connect to on a tenant's behalf, else an error wrapping ErrPrivateAddress
// that names the refused block (for the operator's log; it is not meant for
// the tenant).
//
// An IPv6 address that embeds an IPv4 address is judged by that IPv4
// address: IPv4-mapped (::ffff:a.b.c.d), the NAT64 well-known prefix
// (64:ff9b::a.b.c.d, so that webhooks keep working on an IPv6-only host
// behind DNS64) and 6to4 (2002:aabb:ccdd::/48). Teredo and the deprecated
// IPv4-compatible form are refused outright. A zone is ignored.
func CheckAddr(ip netip.Addr) error {
	if !ip.IsValid() {
		return fmt.Errorf("%w: invalid address", ErrPrivateAddress)
	}
	ip = ip.WithZone("")
	if ip.Is4In6() {
		return check4(ip.Unmap(), "IPv4-mapped address ")
	}
	if ip.Is4() {
		return check4(ip, "")
	}
	b := ip.As16()
	switch {
	case nat64WKP.Contains(ip):
		return check4(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}), "NAT64 address embedding ")
	case sixToFour.Contains(ip):
		return check4(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}), "6to4 address embedding ")
	}
	for _, s := range special6 {
		if s.prefix.Contains(ip) {
			return fmt.Errorf("%w: %s is %s", ErrPrivateAddress, ip, s.name)
		}
	}
	if !globalUnicast6.Contains(ip) {
		return fmt.Errorf("%w: %s is outside global unicast 2000::/3", ErrPrivateAddress, ip)
	}
	return nil
}

// check4 applies the IPv4 rules; via describes the IPv6 form it came from.
func check4(ip netip.Addr, via string) error {
	for _, s := range special4 {
		if s.prefix.Contains(ip) {
			return fmt.Errorf("%w: %s%s is %s", ErrPrivateAddress, via, ip, s.name)
		}
	}
	return nil
}
