package relay

import (
	"net/netip"
	"testing"

	"github.com/pion/stun/v4"

	"github.com/turnpike-dev/turnpike/relay/config"
)

// Fuzz targets for the peer policy beyond FuzzPeerPolicy: every IPv6
// spelling of an IPv4 address gets the IPv4 address's verdict, and the
// port check never opens what the address check refuses, nor a node port
// outside the relay range.

// fuzzNode is the node address of the fuzzed policies; seeds spell it.
var fuzzNode = netip.MustParseAddr("93.184.216.7")

var fuzzRelayPorts = config.PortRange{Min: 49152, Max: 65535}

func fuzzPolicies(t testing.TB) []*peerPolicy {
	var out []*peerPolicy
	for _, p := range []config.PeerPolicy{
		{},
		{Allow: []string{"10.1.0.0/16", "198.18.0.0/15"}, Deny: []string{"203.0.113.0/24"}, ClusterCIDRs: []string{"10.244.0.0/16", "fd00:10::/56"}},
		{Allow: []string{"0.0.0.0/0", "::/0"}},
	} {
		pp, err := newPeerPolicy(p, []netip.Addr{fuzzNode, netip.MustParseAddr("2600:1::7")}, fuzzRelayPorts)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pp)
	}
	return out
}

// ipv4Spellings returns the IPv6 forms that carry v: mapped, translated,
// compatible, NAT64, 6to4 and Teredo. rest fills the bytes the embedding
// leaves free (6to4's subnet and interface, Teredo's server, flags, port).
func ipv4Spellings(v [4]byte, rest [10]byte) []netip.Addr {
	with := func(prefix []byte, at int, embedded [4]byte) netip.Addr {
		var b [16]byte
		copy(b[:], prefix)
		copy(b[at:], embedded[:])
		return netip.AddrFrom16(b)
	}
	sixToFour := [16]byte{0x20, 0x02}
	copy(sixToFour[6:], rest[:])
	copy(sixToFour[2:], v[:])
	teredo := [16]byte{0x20, 0x01, 0, 0}
	copy(teredo[4:12], rest[:8])
	for i := range v {
		teredo[12+i] = ^v[i]
	}
	return []netip.Addr{
		with([]byte{10: 0xff, 11: 0xff}, 12, v),  // ::ffff:v
		with([]byte{8: 0xff, 9: 0xff}, 12, v),    // ::ffff:0:v
		with(nil, 12, v),                         // ::v
		with([]byte{0, 0x64, 0xff, 0x9b}, 12, v), // 64:ff9b::v
		netip.AddrFrom16(sixToFour),              // 2002:v::
		netip.AddrFrom16(teredo),                 // 2001:0:…:^v
	}
}

func FuzzIPv4Spellings(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "10.0.0.1", "169.254.169.254", "93.184.216.7", "8.8.8.8", "192.0.0.9", "0.0.0.1"} {
		a := netip.MustParseAddr(s).As4()
		f.Add(a[:], []byte("0123456789"), uint16(22))
		f.Add(a[:], make([]byte, 10), uint16(50000))
	}
	policies := fuzzPolicies(f)
	f.Fuzz(func(t *testing.T, v4, restBytes []byte, port uint16) {
		if len(v4) != 4 || len(restBytes) < 10 {
			return
		}
		v := netip.AddrFrom4([4]byte(v4))
		for _, spelling := range ipv4Spellings([4]byte(v4), [10]byte(restBytes)) {
			canon := canonicalPeer(spelling)
			// ::0.0.0.0 and ::0.0.0.1 are IPv6's own unspecified and
			// loopback addresses, not IPv4 ones: refused either way.
			if canon != v && canon != netip.IPv6Unspecified() && canon != netip.IPv6Loopback() {
				t.Fatalf("%s folds to %s, want %s", spelling, canon, v)
			}
			for i, p := range policies {
				okV4, _ := p.checkPort(netip.AddrPortFrom(v, port))
				ok, reason := p.checkPort(netip.AddrPortFrom(spelling, port))
				if ok != okV4 {
					t.Fatalf("policy %d: %s port %d: %v (%s), but %s: %v", i, spelling, port, ok, reason, v, okV4)
				}
			}
		}
	})
}

// FuzzCheckPort: the port check admits nothing the address check refuses,
// and a node address only on a relay port.
func FuzzCheckPort(f *testing.F) {
	for _, s := range []string{"93.184.216.7", "::ffff:93.184.216.7", "64:ff9b::5db8:d807", "2600:1::7", "10.1.2.3", "fe80::1"} {
		a := netip.MustParseAddr(s).As16()
		f.Add(a[:], uint16(9641))
		f.Add(a[:], uint16(49152))
	}
	policies := fuzzPolicies(f)
	f.Fuzz(func(t *testing.T, b []byte, port uint16) {
		if len(b) != 16 {
			return
		}
		peer := netip.AddrPortFrom(netip.AddrFrom16([16]byte(b)), port)
		inRange := int(port) >= fuzzRelayPorts.Min && int(port) <= fuzzRelayPorts.Max
		for i, p := range policies {
			ok, reason := p.checkPort(peer)
			okAddr, _ := p.check(peer.Addr())
			if ok && !okAddr {
				t.Fatalf("policy %d: checkPort admits %s, check refuses its address", i, peer)
			}
			canon := canonicalPeer(peer.Addr())
			if ok && !inRange && (canon == fuzzNode || canon == netip.MustParseAddr("2600:1::7")) {
				t.Fatalf("policy %d: node address %s admitted on port %d", i, peer.Addr(), port)
			}
			if !ok && reason == "" {
				t.Fatalf("policy %d: %s refused without a reason", i, peer)
			}
		}
	})
}

// FuzzDecodeXORAddress: the gate's XOR-PEER-ADDRESS decoder accepts
// exactly the well-formed values (family 1 with 4 address bytes, family 2
// with 16), and then agrees with pion/stun's decoder, which the engine
// uses to install the permission; anything else is refused, where pion
// would zero-pad it into another address.
func FuzzDecodeXORAddress(f *testing.F) {
	id := [stun.TransactionIDSize]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	for _, ap := range []string{"93.184.216.34:3478", "[2606:2800:220:1::1]:443"} {
		m := stun.MustBuild(stun.NewTransactionIDSetter(id), stun.BindingRequest, xorPeer(netip.MustParseAddrPort(ap)))
		v, _ := m.Get(stun.AttrXORPeerAddress)
		f.Add(v)
	}
	f.Add([]byte{0, 2, 0x21, 0x12, 1, 2, 3, 4}) // IPv6 family, 4 address bytes
	f.Fuzz(func(t *testing.T, v []byte) {
		got, ok := decodeXORAddress(v, id)
		wellFormed := len(v) >= 4 && v[0] == 0 && (v[1] == 1 && len(v) == 8 || v[1] == 2 && len(v) == 20)
		if ok != wellFormed {
			t.Fatalf("decodeXORAddress(%x) ok=%v, want %v", v, ok, wellFormed)
		}
		if !ok {
			return
		}
		m := stun.MustBuild(stun.NewTransactionIDSetter(id), stun.BindingRequest, rawAttr(stun.AttrXORPeerAddress, v))
		var pion stun.XORMappedAddress
		if err := pion.GetFromAs(m, stun.AttrXORPeerAddress); err != nil {
			t.Fatalf("pion refuses %x, which the gate accepts: %v", v, err)
		}
		ip, _ := netip.AddrFromSlice(pion.IP)
		if v[1] == 1 {
			ip = ip.Unmap()
		}
		if ip != got.Addr() || uint16(pion.Port) != got.Port() {
			t.Fatalf("%x: gate decodes %s, pion %s:%d", v, got, ip, pion.Port)
		}
	})
}
