package webhook

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// TestCheckAddr covers every block of the IANA special-purpose registries
// (an address inside each, and the neighbours just outside where the block
// is not at a /8 boundary) and the IPv6 forms embedding an IPv4 address.
func TestCheckAddr(t *testing.T) {
	t.Parallel()
	refused := []string{
		// IPv4 special-purpose registry, multicast, reserved.
		"0.0.0.0", "0.1.2.3", "10.0.0.1", "10.255.255.255",
		"100.64.0.1", "100.100.100.200" /* Alibaba metadata */, "100.127.255.255",
		"127.0.0.1", "127.255.255.254", "169.254.169.254" /* cloud metadata */, "169.254.0.1",
		"172.16.0.1", "172.31.255.255",
		"192.0.0.1", "192.0.0.8", "192.0.0.9", "192.0.0.10", "192.0.0.170", "192.0.0.171", "192.0.0.255",
		"192.0.2.1", "192.31.196.1", "192.52.193.1", "192.88.99.1", "192.88.99.2",
		"192.168.0.1", "192.168.255.255", "192.175.48.1",
		"198.18.0.1", "198.19.255.255", "198.51.100.7", "203.0.113.9",
		"224.0.0.1", "239.255.255.250", "240.0.0.1", "250.1.2.3", "255.255.255.255",
		// IPv6 special-purpose registry and deprecated blocks.
		"::", "::1", "::2", "::127.0.0.1", "::8.8.8.8", /* IPv4-compatible, deprecated */
		"::ffff:127.0.0.1", "::ffff:10.1.2.3", "::ffff:169.254.169.254", "::ffff:100.100.100.200",
		"64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::c0a8:101", "64:ff9b::6464:64c8",
		"64:ff9b:1::808:808", "64:ff9b:1:ffff::1",
		"100::1", "100::ffff:ffff:ffff:ffff", "100:0:0:1::1",
		"2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2" /* Teredo */, "2001:0:4136:e378:8000:63bf:f5ff:fffe",
		"2001:1::1", "2001:1::2", "2001:1::3", "2001:2::1", "2001:3::1", "2001:4:112::1",
		"2001:10::1", "2001:20::1", "2001:30::1", "2001:1ff:ffff::1",
		"2001:db8::1", "2001:db8:ffff::1",
		"2002:7f00:1::1", "2002:a00:1::1", "2002:a9fe:a9fe::1", "2002:c0a8:101::1", "2002::1", // 6to4 of private IPv4
		"2620:4f:8000::1", "3fff::1", "3fff:fff::1", "5f00::1",
		"fc00::1", "fd12:3456::1", "fe80::1", "fe80::1%eth0", "febf::1", "fec0::1", "feff::1",
		"ff02::1", "ff05::1:3", "ff0e::1",
		"4000::1", "8000::1", "e000::1", "1::1", // outside 2000::/3
	}
	public := []string{
		"1.1.1.1", "8.8.8.8", "9.9.9.9", "100.63.255.255", "100.128.0.0", "126.255.255.255", "128.0.0.1",
		"169.253.255.255", "169.255.0.1", "172.15.255.255", "172.32.0.0", "192.0.1.255", "192.0.3.0",
		"192.88.98.255", "192.88.100.0", "192.167.255.255", "192.169.0.0", "198.17.255.255", "198.20.0.0",
		"198.51.99.255", "203.0.112.255", "223.255.255.255",
		"::ffff:8.8.8.8",                       // mapped: judged as 8.8.8.8
		"64:ff9b::808:808", "64:ff9b::101:101", // NAT64 well-known prefix embedding a public address
		"2002:808:808::1", // 6to4 embedding 8.8.8.8
		"2001:200::1", "2001:4860:4860::8888", "2606:4700:4700::1111", "2a00:1450:4001::1", "3ffe::1",
	}
	for _, s := range refused {
		ip := netip.MustParseAddr(s)
		if err := CheckAddr(ip); !errors.Is(err, ErrPrivateAddress) {
			t.Errorf("CheckAddr(%s) = %v, want ErrPrivateAddress", s, err)
		}
	}
	for _, s := range public {
		if err := CheckAddr(netip.MustParseAddr(s)); err != nil {
			t.Errorf("CheckAddr(%s) = %v, want nil", s, err)
		}
	}
	if err := CheckAddr(netip.Addr{}); err == nil {
		t.Error("CheckAddr(zero Addr) = nil")
	}
}

// TestCheckAddrNamesBlock: the operator's log says why.
func TestCheckAddrNamesBlock(t *testing.T) {
	t.Parallel()
	for ip, want := range map[string]string{
		"100.100.100.200":    "100.100.100.200 is shared address space",
		"64:ff9b::a9fe:a9fe": "NAT64 address embedding 169.254.169.254 is link-local",
		"2002:a00:1::1":      "6to4 address embedding 10.0.0.1 is private-use",
		"::ffff:127.0.0.1":   "IPv4-mapped address 127.0.0.1 is loopback",
		"2001::1":            "Teredo",
	} {
		err := CheckAddr(netip.MustParseAddr(ip))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckAddr(%s) = %v, want it to mention %q", ip, err, want)
		}
	}
}

func TestPublicOnlyControl(t *testing.T) {
	t.Parallel()
	for addr, ok := range map[string]bool{
		"127.0.0.1:80": false, "[::1]:443": false, "[fe80::1%lo]:80": false, "[::ffff:10.0.0.1]:80": false,
		"8.8.8.8:443": true, "[2606:4700::1111]:443": true, "garbage": false,
	} {
		err := PublicOnly("tcp", addr, nil)
		if (err == nil) != ok {
			t.Errorf("PublicOnly(%s) = %v, want ok=%v", addr, err, ok)
		}
	}
}
