package mtls

import "net/netip"

// ipv6GroupBits is the prefix that one IPv6 client is taken to hold: a /64 is what a
// single subscriber or host usually gets, and picking new addresses inside it is free.
const ipv6GroupBits = 64

// groupAddr is the key of ip for every per-address limit and lockout: an IPv4 address
// (IPv4-mapped IPv6 included) stands for itself, an IPv6 address for its /64.
func groupAddr(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is4() || !ip.IsValid() {
		return ip
	}
	p, err := ip.WithZone("").Prefix(ipv6GroupBits)
	if err != nil {
		return ip
	}
	return p.Addr()
}

// groupString names ip's group for the log: "192.0.2.1" or "2001:db8::/64".
func groupString(ip netip.Addr) string {
	g := groupAddr(ip)
	if g.Is6() {
		return netip.PrefixFrom(g, ipv6GroupBits).String()
	}
	return g.String()
}
