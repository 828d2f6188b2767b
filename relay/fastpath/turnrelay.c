//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// turnrelay: the kernel half of turnpike's relay fast path. A TC ingress
// program that relays TURN ChannelData over UDP (IPv4 and IPv6) once the
// relay (in userspace) has bound the channel and written it into the maps
// below:
//
//   client -> relay listener, ChannelData(channel, data)
//       becomes  relay socket -> peer, UDP(data)
//   peer -> relay socket, UDP(data)
//       becomes  relay listener -> client, ChannelData(channel, data)
//   client A -> relay listener, ChannelData(channel, data), where the peer is
//   the relay socket of allocation B on this host (both ends of a call on
//   the same relay)
//       becomes  relay listener -> client B, ChannelData(B's channel, data)
//
// Anything the program is not sure about passes on untouched (TC_ACT_UNSPEC),
// and the userspace relay handles it as if the program were not there.
// The relay regenerates turnrelay_bpfel.o and turnrelay_bpfeb.o from this file
// with `make generate-bpf` (clang); `go build` uses the committed objects.
//
// Map layout: the client side is keyed by what a ChannelData datagram
// carries, and the value holds all the client-to-peer direction needs. A
// channel lives in a table of entries of one cache line, in the one slot
// its key hashes to: one read per datagram, where a hash map reads a
// bucket and then an element over several lines. A channel whose slot
// another channel has is in a hash map instead, which the program reads
// when the slot holds another key (and so is an IPv6 channel whose relay
// socket is on an address of its own; see struct chan6). The
// peer side is an array indexed by the relay
// port, one entry per allocation with a few peer slots inline: a datagram
// to a relay socket costs one array access and no hashing. Bandwidth
// buckets are an array by relay port too, read only when the channel has a
// quota. (docs/performance.md has what this costs per packet at 100 and
// 10,000 allocations, and the layouts tried.)

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define LOOPBACK_IFINDEX 1
#define CHANNEL_MIN 0x4000
#define CHANNEL_MAX 0x4fff
#define CHANNEL_HDR 4
#define RELAY_TTL 64
#define MAX_CHANNELS 65536
#define PORTS 65536
#define PEER_SLOTS 4
#define NSEC_PER_SEC 1000000000ULL
#define AF_INET 2
#define AF_INET6 10

// An address: IPv6, or IPv4 as an IPv4-mapped IPv6 address
// (::ffff:a.b.c.d). All zero: unspecified (a socket on all addresses).
struct addr {
	__be32 w[4];
};

// A channel, seen from the client side: what a ChannelData datagram from the
// client carries. Addresses and ports are in network byte order.
struct chan_key {
	struct addr client_ip;
	__be16 client_port;
	__be16 listen_port;
	__u16 channel; // host byte order
	__u16 pad;
};

// flags of chan_val
#define CHAN_PEER_LOCAL 1 // the peer is an address of this host
#define CHAN_LISTEN_ANY 2 // the listener binds all addresses: learn the one the client uses
#define CHAN_QUOTA 4      // the allocation has a bandwidth bucket
#define CHAN_RELAY_ANY 8  // chan6 only: the relay socket binds all addresses

// Everything the client-to-peer direction needs, so that it reads no
// other map (but the bucket when there is a quota).
struct chan_val {
	struct addr peer_ip;
	struct addr relay_ip;   // the relay socket's address; zero: all addresses
	struct addr listen_ip;  // the listener's address; with CHAN_LISTEN_ANY the last one learnt
	__be16 peer_port;
	__be16 relay_port;
	__u16 flags;
	// A peer on this host is relayed only on these ports (host order,
	// inclusive): the relay port range, unless the peer policy allows
	// the address on every port.
	__u16 local_port_min;
	__u16 local_port_max;
	__u16 pad[3];
	// CLOCK_MONOTONIC; read per datagram as the coarse clock (no clock
	// source read; it lags by up to a tick, so an entry may outlive its
	// expiry by that much).
	__u64 expires_ns;
};

// An IPv4 channel in the table of IPv4 channels: key and value in one
// cache line.
// Addresses and ports in network byte order; a zero address is unspecified.
struct chan4 {
	__be32 client_ip;
	__be16 client_port;
	__be16 listen_port;
	__u16 channel; // host byte order; 0: a free entry
	__u16 flags;   // as chan_val's
	__be32 peer_ip;
	__be32 relay_ip;
	__be32 listen_ip;
	__be16 peer_port;
	__be16 relay_port;
	__u16 local_port_min;
	__u16 local_port_max;
	__u64 expires_ns;
	__u64 pad[3];
};

_Static_assert(sizeof(struct chan4) == 64, "a chan4 is one cache line");

// An IPv6 channel in the table of IPv6 channels: key and value in one
// cache line. Three IPv6 addresses of its own would not fit, so it holds
// none of this host's: the table takes only a channel whose relay socket
// binds all addresses (CHAN_RELAY_ANY) or the listener's address (as the
// relay binds both, unless it has several bind addresses of one family),
// and then the relayed datagram leaves from the address the client sent
// to. listen_tag says whether that is the listener's address (or, on a
// listener on all addresses, the one last learnt): addr_tag of it, 0
// while none is learnt. Any other channel is in the hash map.
struct chan6 {
	struct addr client_ip;
	__be16 client_port;
	__be16 listen_port;
	__u16 channel; // host byte order; 0: a free entry
	__u16 flags;   // as chan_val's, and CHAN_RELAY_ANY
	struct addr peer_ip;
	__be16 peer_port;
	__be16 relay_port;
	__u16 local_port_min;
	__u16 local_port_max;
	__u64 listen_tag;
	__u64 expires_ns;
};

_Static_assert(sizeof(struct chan6) == 64, "a chan6 is one cache line");

// The tables of channels: a channel in the slot slot_hash picks, 4 MiB
// each. Powers of two.
#define CHAN4_SLOTS 65536
#define CHAN6_SLOTS 65536

// A peer of an allocation with a bound channel, seen from the peer side.
struct peer_slot {
	struct addr peer_ip;
	__be16 peer_port;
	__u16 channel; // host byte order; 0: a free slot
	__u32 pad;
	__u64 expires_ns; // the permission's end
};

// flags of alloc
#define ALLOC_USED 1
#define ALLOC_V6 2           // the allocation's addresses are IPv6
#define ALLOC_CLIENT_LOCAL 4 // the client is an address of this host
#define ALLOC_QUOTA 8        // the allocation has a bandwidth bucket

// An allocation, at the index of its relay port (host order).
struct alloc {
	struct addr client_ip;
	struct addr relay_ip;  // zero: the relay socket binds all addresses
	struct addr listen_ip; // the address the client sends to (zero until learnt)
	__be16 client_port;
	__be16 listen_port;
	__u16 flags;
	__u16 pad;
	struct peer_slot peers[PEER_SLOTS];
};

// The bandwidth quota of one allocation and direction: a token bucket, at
// index relay port * 2 + direction. rate 0: none.
struct bucket {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 rate;  // bytes per second
	__u64 burst; // bytes
	__u64 tokens;
	__u64 last_ns;
};

// Counters, per CPU: one entry per stat_index.
struct stats {
	__u64 packets;
	__u64 bytes;
};

enum stat_index {
	STAT_TO_PEER,
	STAT_FROM_PEER,
	STAT_DROPPED_TO_PEER,   // over the bandwidth quota
	STAT_DROPPED_FROM_PEER, // over the bandwidth quota
	STAT_COUNT,
};

enum direction {
	DIR_TO_PEER,
	DIR_FROM_PEER,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_CHANNELS);
	__type(key, struct chan_key);
	__type(value, struct chan_val);
} channels SEC(".maps");

// Mmapable: then the values start on a page, so that each entry is one
// cache line (an ordinary array's values start 16 bytes into one). The
// relay writes a slot in steps that keep what the program sees consistent
// (see slots_linux.go): channel 0 marks a free slot.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CHAN4_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct chan4);
} chans4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CHAN6_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct chan6);
} chans6 SEC(".maps");

// The hash seed of the tables of channels, set by the relay at load time.
volatile const __u32 slot_seed;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PORTS);
	__type(key, __u32);
	__type(value, struct alloc);
} allocs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PORTS * 2);
	__type(key, __u32);
	__type(value, struct bucket);
} buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_COUNT);
	__type(key, __u32);
	__type(value, struct stats);
} counters SEC(".maps");

static __always_inline void count(__u32 index, __u64 bytes)
{
	struct stats *s = bpf_map_lookup_elem(&counters, &index);

	if (s) {
		s->packets++;
		s->bytes += bytes;
	}
}

static __always_inline int addr_eq(const struct addr *a, const struct addr *b)
{
	return a->w[0] == b->w[0] && a->w[1] == b->w[1] && a->w[2] == b->w[2] && a->w[3] == b->w[3];
}

// addr_v4mapped says whether a is an IPv4-mapped address (::ffff:a.b.c.d),
// the form IPv4 addresses take in this program's keys.
static __always_inline int addr_v4mapped(const struct addr *a)
{
	return !(a->w[0] | a->w[1]) && a->w[2] == bpf_htonl(0xffff);
}

static __always_inline int addr_zero(const struct addr *a)
{
	return !(a->w[0] | a->w[1] | a->w[2] | a->w[3]);
}

// slot_mix and slot_end hash an IPv6 channel's key, word by word as the
// words are in memory, with the seed; the relay computes the same
// (slotHash).
static __always_inline __u32 slot_mix(__u32 h, __u32 w)
{
	h ^= w;
	h *= 0x9e3779b1;
	return h ^ (h >> 15);
}

static __always_inline __u32 slot_end(__u32 h)
{
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	return h ^ (h >> 16);
}

// chan4_hash is the hash of an IPv4 channel's key: three words, so mixed
// more briefly than slot_mix and slot_end do (the relay's chan4Hash).
static __always_inline __u32 chan4_hash(__be32 client_ip, __be16 client_port, __be16 listen_port, __u16 channel)
{
	__u32 h = slot_seed ^ client_ip;

	h *= 0x9e3779b1;
	h ^= h >> 15;
	h ^= (__u32)client_port | (__u32)listen_port << 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h ^= channel;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

// lookup4 returns the table's entry of an IPv4 channel, or NULL (then it
// may be in the hash map).
static __always_inline struct chan4 *lookup4(__be32 client_ip, __be16 client_port, __be16 listen_port, __u16 channel)
{
	__u32 slot = chan4_hash(client_ip, client_port, listen_port, channel) & (CHAN4_SLOTS - 1);
	struct chan4 *e = bpf_map_lookup_elem(&chans4, &slot);

	if (!e || e->client_ip != client_ip || e->client_port != client_port || e->listen_port != listen_port ||
	    e->channel != channel)
		return 0;
	return e;
}

// addr_tag is a 64-bit hash of an address, keyed by the seed, never 0:
// what an IPv6 channel's entry keeps of its listener's address. The relay
// computes the same (addrTag). Two of the host's addresses share a tag
// with a chance of about 2^-63. It is no cryptographic hash, and a
// datagram at TC ingress may carry any destination: a sender who knew the
// seed (readable by root only) and spoofed a client's address and port
// could find a destination that passes for its listener's, and have the
// channel relay from that address. A channel on a listener on all
// addresses learns any destination the client's address and port send to
// anyway, as the userspace relay answers from it.
static __always_inline __u64 addr_tag(const struct addr *a)
{
	__u64 x = ((__u64)a->w[0] << 32 | a->w[1]) ^ slot_seed;

	x *= 0x9e3779b97f4a7c15ULL;
	x ^= x >> 32;
	x ^= (__u64)a->w[2] << 32 | a->w[3];
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 29;
	return x | 1;
}

// lookup6 returns the table's entry of an IPv6 channel, or NULL (then it
// may be in the hash map).
static __always_inline struct chan6 *lookup6(const struct chan_key *k)
{
	__u32 h = slot_seed, slot;
	struct chan6 *e;

#pragma unroll
	for (int i = 0; i < 4; i++)
		h = slot_mix(h, k->client_ip.w[i]);
	h = slot_mix(slot_mix(h, (__u32)k->client_port | (__u32)k->listen_port << 16), k->channel);
	slot = slot_end(h) & (CHAN6_SLOTS - 1);
	e = bpf_map_lookup_elem(&chans6, &slot);
	if (!e || !addr_eq(&e->client_ip, &k->client_ip) || e->client_port != k->client_port ||
	    e->listen_port != k->listen_port || e->channel != k->channel)
		return 0;
	return e;
}

static __always_inline void addr4(struct addr *a, __be32 ip)
{
	a->w[0] = a->w[1] = 0;
	a->w[2] = ip ? bpf_htonl(0xffff) : 0; // zero stays unspecified
	a->w[3] = ip;
}

// chan_from4 gives an entry of the IPv4 table as the hash map's value.
static __always_inline void chan_from4(struct chan_val *v, const struct chan4 *e)
{
	addr4(&v->peer_ip, e->peer_ip);
	addr4(&v->relay_ip, e->relay_ip);
	addr4(&v->listen_ip, e->listen_ip);
	v->peer_port = e->peer_port;
	v->relay_port = e->relay_port;
	v->flags = e->flags;
	v->local_port_min = e->local_port_min;
	v->local_port_max = e->local_port_max;
	v->expires_ns = e->expires_ns;
}

// chan_from6 gives an entry of the IPv6 table as the hash map's value, for
// a datagram to daddr whose tag is daddr_tag. The listener's address is
// daddr when the tag says so, else left zero, which no datagram is sent to.
static __always_inline void chan_from6(struct chan_val *v, const struct chan6 *e, const struct addr *daddr, __u64 daddr_tag)
{
	__builtin_memset(v, 0, sizeof(*v));
	v->peer_ip = e->peer_ip;
	if (e->listen_tag == daddr_tag)
		v->listen_ip = *daddr;
	if (!(e->flags & CHAN_RELAY_ANY))
		v->relay_ip = v->listen_ip; // the listener's address (a channel on another is not in the table)
	v->peer_port = e->peer_port;
	v->relay_port = e->relay_port;
	v->flags = e->flags & ~CHAN_RELAY_ANY;
	v->local_port_min = e->local_port_min;
	v->local_port_max = e->local_port_max;
	v->expires_ns = e->expires_ns;
}

// over_quota takes bytes from the allocation's bucket for direction and says
// whether there were not enough. No bucket: no quota.
static __always_inline int over_quota(__be16 relay_port, __u32 direction, __u32 bytes)
{
	__u32 index = (__u32)bpf_ntohs(relay_port) * 2 + direction;
	struct bucket *b = bpf_map_lookup_elem(&buckets, &index);
	__u64 now, elapsed;
	int over;

	if (!b || !b->rate)
		return 0;
	now = bpf_ktime_get_ns();
	bpf_spin_lock(&b->lock);
	elapsed = now - b->last_ns;
	if (elapsed > 10 * NSEC_PER_SEC) // keeps elapsed * rate below 2^64 (rate <= 1e9)
		elapsed = 10 * NSEC_PER_SEC;
	b->tokens += elapsed * b->rate / NSEC_PER_SEC;
	if (b->tokens > b->burst)
		b->tokens = b->burst;
	b->last_ns = now;
	over = b->tokens < bytes;
	if (!over)
		b->tokens -= bytes;
	bpf_spin_unlock(&b->lock);
	return over;
}

static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

// The UDP pseudo header's sum: the IPv6 layout, which sums to the same as
// IPv4's when only the last word of each address counts.
struct pseudo_hdr6 {
	struct addr saddr;
	struct addr daddr;
	__be32 len;
	__be32 protocol;
};

struct pseudo_hdr4 {
	__be32 saddr;
	__be32 daddr;
	__be32 len;
	__be32 protocol;
};

// looks_partial says whether a UDP checksum field holds only the pseudo
// header's sum: a datagram sent on this host whose checksum the device is
// to finish (CHECKSUM_PARTIAL). Such a datagram may only be delivered
// locally after the rewrite (the kernel would finish its checksum at the
// wrong offset once the headers move), with its checksum computed in full.
// A real checksum equal to that value (one in 65536) only costs that.
static __always_inline int looks_partial(const int v6, const struct addr *saddr, const struct addr *daddr, struct udphdr *udp)
{
	__s64 sum;

	if (v6) {
		struct pseudo_hdr6 ph = { *saddr, *daddr, bpf_htonl(bpf_ntohs(udp->len)), bpf_htonl(IPPROTO_UDP) };

		sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), 0);
	} else {
		struct pseudo_hdr4 ph = { saddr->w[3], daddr->w[3], bpf_htonl(bpf_ntohs(udp->len)), bpf_htonl(IPPROTO_UDP) };

		sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), 0);
	}
	return sum >= 0 && udp->check == csum_fold(sum);
}

// udp_csum_update returns the UDP checksum after the words in from were
// replaced by those in to (RFC 1624). A zero checksum (none: IPv4 only)
// stays zero. The IPv4-mapped prefix of IPv4 addresses is the same in from
// and to, so it cancels out.
static __always_inline __sum16 udp_csum_update(__sum16 check, __be32 *from, __u32 from_size, __be32 *to, __u32 to_size)
{
	__s64 sum;
	__u16 folded;

	if (!check)
		return 0;
	sum = bpf_csum_diff(from, from_size, to, to_size, (__u16)~check);
	if (sum < 0)
		return 0;
	folded = ~csum_fold(sum);
	return folded ? folded : 0xffff;
}

#define IP_HLEN(v6) ((v6) ? sizeof(struct ipv6hdr) : sizeof(struct iphdr))
#define L4_OFF(v6) (sizeof(struct ethhdr) + IP_HLEN(v6))

// ip_finish writes the new addresses and length into the IP header after
// the UDP header was rewritten: for IPv4 the header checksum too, IPv6 has
// none.
static __always_inline int ip_finish(struct __sk_buff *skb, const int v6, const struct addr *saddr, const struct addr *daddr, __u16 udp_len)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;

	if (data + L4_OFF(v6) + sizeof(struct udphdr) > data_end)
		return -1;
	if (v6) {
		struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);

		__builtin_memcpy(&ip6->saddr, saddr, sizeof(*saddr));
		__builtin_memcpy(&ip6->daddr, daddr, sizeof(*daddr));
		ip6->payload_len = bpf_htons(udp_len);
		ip6->hop_limit = RELAY_TTL;
	} else {
		struct iphdr *ip = data + sizeof(struct ethhdr);

		ip->saddr = saddr->w[3];
		ip->daddr = daddr->w[3];
		ip->tot_len = bpf_htons(sizeof(*ip) + udp_len);
		// (may_alias: the words are read after the header's fields were
		// written through other types.)
		__u16 __attribute__((__may_alias__)) *w = (void *)ip;
		__u32 sum = 0;

		ip->ttl = RELAY_TTL;
		ip->check = 0;
		// Ten words: summed here, cheaper than a helper call.
#pragma unroll
		for (int i = 0; i < (int)(sizeof(*ip) / 2); i++)
			sum += w[i];
		ip->check = ~csum_fold(sum);
	}
	return 0;
}

// The next hop the kernel's routes gave for a datagram from src to dst that
// came in on in_ifindex, kept per CPU so that the next datagram on the same way needs
// no lookup: a lookup is about half of what forwarding a datagram costs.
// It holds while gen is hop_gen's value, which the process that loaded the
// program (the fast-path agent) raises on every change to the host's
// routes, neighbours, links, addresses and rules it hears of and once a
// second whatever it hears (hops_linux.go). len_ok is the route's MTU, the
// longest datagram (IP total length) it lets through: a longer one asks
// the kernel (which refuses it). gen 0: never valid.
struct hop {
	struct addr src, dst;
	__u32 in_ifindex;
	__u32 out_ifindex;
	__u64 gen;
	__u16 len_ok;
	__u8 smac[ETH_ALEN];
	__u8 dmac[ETH_ALEN];
	__u16 pad;
};

// 64 bytes; a per-CPU value is only 8-byte aligned, so it may span two
// lines.
_Static_assert(sizeof(struct hop) == 64, "a hop is 64 bytes");

#define HOP_SLOTS 1024 // per CPU; a power of two

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HOP_SLOTS);
	__type(key, __u32);
	__type(value, struct hop);
} hops SEC(".maps");

// The generation of the routes that hold, raised by the relay (never 0).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} hop_gen SEC(".maps");

// How a rewritten datagram leaves.
enum route {
	ROUTE_PASS,      // give the original to userspace
	ROUTE_LOCAL,     // deliver to a socket of this host
	ROUTE_REDIRECT,  // transmit on route_ifindex
};

// A parsed datagram: Ethernet, IPv4 or IPv6 without options or extension
// headers, UDP.
struct pkt {
	struct addr saddr, daddr;
	struct udphdr *udp;
	struct ethhdr *eth;
	__u16 udp_len;
};

static __always_inline __u64 current_hop_gen(void)
{
	__u32 zero = 0;
	__u64 *gen = bpf_map_lookup_elem(&hop_gen, &zero);

	return gen ? *gen : 0;
}

// hop_slot is where this CPU keeps the route from src to dst for
// datagrams in on in_ifindex.
static __always_inline __u32 hop_slot(const struct addr *src, const struct addr *dst, __u32 in_ifindex)
{
	__u32 h = slot_seed;

#pragma unroll
	for (int i = 0; i < 4; i++)
		h = slot_mix(slot_mix(h, src->w[i]), dst->w[i]);
	return slot_end(slot_mix(h, in_ifindex)) & (HOP_SLOTS - 1);
}

// hop_holds says whether r, this CPU's entry for the datagram's way, is
// a next hop kept under generation gen that takes a datagram of tot_len.
static __always_inline int hop_holds(const struct hop *r, __u64 gen, __u32 in_ifindex, const struct addr *src,
				     const struct addr *dst, __u16 tot_len)
{
	return gen && r->gen == gen && r->in_ifindex == in_ifindex && tot_len <= r->len_ok && addr_eq(&r->src, src) &&
	       addr_eq(&r->dst, dst);
}

// keep_hop keeps the kernel's answer for the datagram, found under
// generation gen, in r for the next ones on the same way.
static __always_inline void keep_hop(struct hop *r, __u32 in_ifindex, const struct addr *src, const struct addr *dst,
				     const struct bpf_fib_lookup *fib, __u64 gen)
{
	// The entry is this CPU's, and the program runs in softirq, which
	// does not nest on a CPU: nothing reads it while it is written. (A
	// kernel that preempts softirq sections on one CPU, as PREEMPT_RT
	// may, would need a sequence count here.)
	r->src = *src;
	r->dst = *dst;
	r->in_ifindex = in_ifindex;
	r->out_ifindex = fib->ifindex;
	// On success the kernel gives the MTU it checked the datagram
	// against (a kernel that does not leaves the datagram's own length
	// there: the union with tot_len).
	r->len_ok = fib->mtu_result;
	__builtin_memcpy(r->smac, fib->smac, ETH_ALEN);
	__builtin_memcpy(r->dmac, fib->dmac, ETH_ALEN);
	r->gen = gen;
}

// decide picks the route for a datagram that came in on ingress_ifindex and,
// rewritten, goes from saddr to daddr. Both ends on this host (arriving on
// lo): deliver locally. Both ends elsewhere: forward by the kernel's routing
// table, as the relay's own socket would send it. A mix passes to userspace:
// a local source arriving from outside is a martian, and a datagram from a
// local sender may carry a checksum the device has yet to finish.
static __always_inline enum route decide(struct __sk_buff *skb, const int v6, struct pkt *p, int dest_local,
					 const struct addr *saddr, const struct addr *daddr, __u16 udp_len, __u32 *ifindex)
{
	__u32 in_ifindex = skb->ingress_ifindex, slot;
	int from_lo = in_ifindex == LOOPBACK_IFINDEX;
	struct bpf_fib_lookup fib = {};
	struct hop *kept;
	__u64 gen;
	long rc;

	if (dest_local)
		return from_lo ? ROUTE_LOCAL : ROUTE_PASS;
	if (from_lo || looks_partial(v6, &p->saddr, &p->daddr, p->udp))
		return ROUTE_PASS;
	slot = hop_slot(saddr, daddr, in_ifindex);
	kept = bpf_map_lookup_elem(&hops, &slot);
	gen = current_hop_gen(); // before the kernel is asked: a change meanwhile makes its answer stale at once
	if (kept && hop_holds(kept, gen, in_ifindex, saddr, daddr, IP_HLEN(v6) + udp_len)) {
		__builtin_memcpy(p->eth->h_dest, kept->dmac, ETH_ALEN);
		__builtin_memcpy(p->eth->h_source, kept->smac, ETH_ALEN);
		*ifindex = kept->out_ifindex;
		return ROUTE_REDIRECT;
	}
	fib.l4_protocol = IPPROTO_UDP;
	fib.tot_len = IP_HLEN(v6) + udp_len;
	fib.ifindex = skb->ingress_ifindex;
	if (v6) {
		fib.family = AF_INET6;
		__builtin_memcpy(fib.ipv6_src, saddr, sizeof(*saddr));
		__builtin_memcpy(fib.ipv6_dst, daddr, sizeof(*daddr));
	} else {
		fib.family = AF_INET;
		fib.ipv4_src = saddr->w[3];
		fib.ipv4_dst = daddr->w[3];
	}
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return ROUTE_PASS; // no neighbour yet, forwarding off, needs fragmenting, ...: userspace
	if (kept && gen)
		keep_hop(kept, in_ifindex, saddr, daddr, &fib, gen);
	__builtin_memcpy(p->eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(p->eth->h_source, fib.smac, ETH_ALEN);
	*ifindex = fib.ifindex;
	return ROUTE_REDIRECT;
}

// leave ends a rewritten datagram's run. bpf_redirect without flags always
// returns TC_ACT_REDIRECT; saying so lets the compiler see that no rewritten
// datagram goes on to the next parse with stale packet pointers.
static __always_inline int leave(enum route route, __u32 ifindex)
{
	if (route == ROUTE_REDIRECT) {
		bpf_redirect(ifindex, 0);
		return TC_ACT_REDIRECT;
	}
	return TC_ACT_OK;
}

// A scratch buffer for summing payloads (the stack is too small).
#define CSUM_CHUNK 256
#define CSUM_CHUNKS 6 // payloads up to 1536 bytes

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u8[2 * CSUM_CHUNK]); // room for the verifier's view of a rounded-up chunk
} csum_scratch SEC(".maps");

// payload_sum returns the ones' complement sum (unfolded) of len bytes of
// the packet from off, or -1.
static __always_inline __s64 payload_sum(struct __sk_buff *skb, __u32 off, __u32 len)
{
	__u32 zero = 0;
	__u8 *buf = bpf_map_lookup_elem(&csum_scratch, &zero);
	__s64 sum = 0;

	if (!buf || len > CSUM_CHUNK * CSUM_CHUNKS)
		return -1;
	for (int i = 0; i < CSUM_CHUNKS; i++) {
		__u32 done = i * CSUM_CHUNK, n;

		if (done >= len)
			break;
		n = len - done;
		if (n > CSUM_CHUNK)
			n = CSUM_CHUNK;
		n = ((n - 1) & (CSUM_CHUNK - 1)) + 1; // 1..CSUM_CHUNK, as the verifier sees it too
		// An odd tail is summed as if padded with zeros (RFC 768).
		*(__u32 *)(buf + ((n - 1) & (CSUM_CHUNK - 4))) = 0;
		if (bpf_skb_load_bytes(skb, off + done, buf, n))
			return -1;
		sum = bpf_csum_diff(0, 0, (__be32 *)buf, (n + 3) & ~3, sum);
		if (sum < 0)
			return -1;
	}
	return sum;
}

// full_udp6_csum computes the UDP checksum of a rewritten IPv6 datagram
// from scratch: pseudo header, the new UDP header, and the payload, which
// is at payload_off in the packet now. For a local delivery of a datagram
// whose sender left its checksum for the device to finish
// (CHECKSUM_PARTIAL, the rule for a UDP socket's datagram on lo): the
// checksum field holds only the pseudo header's sum, and once the program
// has moved the UDP header the receiver checks the datagram in full. (IPv4
// local deliveries carry no checksum at all; IPv6 requires one.) 0: cannot.
static __always_inline __sum16 full_udp6_csum(struct __sk_buff *skb, const struct addr *saddr, const struct addr *daddr,
					      struct udphdr *nu, __u32 payload_off)
{
	__u16 udp_len = bpf_ntohs(nu->len);
	struct {
		struct pseudo_hdr6 ph;
		__be16 sport, dport, len, check;
	} hdr = { { *saddr, *daddr, bpf_htonl(udp_len), bpf_htonl(IPPROTO_UDP) }, nu->source, nu->dest, nu->len, 0 };
	__s64 sum = payload_sum(skb, payload_off, udp_len - sizeof(*nu));
	__u16 folded;

	if (sum < 0)
		return 0;
	sum = bpf_csum_diff(0, 0, (__be32 *)&hdr, sizeof(hdr), sum);
	if (sum < 0)
		return 0;
	folded = ~csum_fold(sum);
	return folded ? folded : 0xffff;
}

// find_peer returns the slot of allocation a bound to peer ip:port whose
// permission is current, or NULL.
static __always_inline struct peer_slot *find_peer(struct alloc *a, const struct addr *ip, __be16 port, __u64 now)
{
#pragma unroll
	for (int i = 0; i < PEER_SLOTS; i++) {
		struct peer_slot *s = &a->peers[i];

		if (s->channel && s->peer_port == port && addr_eq(&s->peer_ip, ip) && now <= s->expires_ns)
			return s;
	}
	return 0;
}

// lookup_alloc returns the allocation on relay port (network order) of the
// datagram's family, or NULL.
static __always_inline struct alloc *lookup_alloc(const int v6, __be16 relay_port)
{
	__u32 index = bpf_ntohs(relay_port);
	struct alloc *a = bpf_map_lookup_elem(&allocs, &index);

	if (!a || !(a->flags & ALLOC_USED) || !(a->flags & ALLOC_V6) != !v6)
		return 0;
	return a;
}

// same_node relays ChannelData from client A whose peer is allocation b's
// relay socket on this host (relay address saddr, port sport: A's) straight
// to b's client, as ChannelData on b's channel: what B's relay socket would
// have received and sent on. Same length: only addresses, ports and the
// channel number change. Without a channel of b bound to A: userspace.
static __always_inline int same_node(struct __sk_buff *skb, const int v6, struct pkt *p, struct chan_val *ch,
				     struct alloc *b, const struct addr *saddr, __u16 data_len, __u64 now)
{
	struct peer_slot *s;
	struct addr from_ip, to_ip;
	enum route route;
	__u32 ifindex = 0;
	__be16 *chd;

	s = find_peer(b, saddr, ch->relay_port, now);
	if (!s || addr_zero(&b->listen_ip))
		return TC_ACT_UNSPEC;
	from_ip = b->listen_ip;
	to_ip = b->client_ip;
	route = decide(skb, v6, p, b->flags & ALLOC_CLIENT_LOCAL, &from_ip, &to_ip, p->udp_len, &ifindex);
	if (route == ROUTE_PASS)
		return TC_ACT_UNSPEC;
	if ((ch->flags & CHAN_QUOTA) && over_quota(ch->relay_port, DIR_TO_PEER, data_len)) {
		count(STAT_DROPPED_TO_PEER, data_len);
		return TC_ACT_SHOT;
	}
	if ((b->flags & ALLOC_QUOTA) && over_quota(ch->peer_port, DIR_FROM_PEER, data_len)) {
		count(STAT_DROPPED_FROM_PEER, data_len);
		return TC_ACT_SHOT;
	}

	chd = (void *)(p->udp + 1);
	{
		struct {
			struct addr saddr, daddr;
			__be16 sport, dport;
			__be16 channel, pad;
		} from = { p->saddr, p->daddr, p->udp->source, p->udp->dest, chd[0], 0 },
		  to = { from_ip, to_ip, b->listen_port, b->client_port, bpf_htons(s->channel), 0 };
		__sum16 check = (route == ROUTE_LOCAL && !v6) ? 0 :
			udp_csum_update(p->udp->check, (__be32 *)&from, sizeof(from), (__be32 *)&to, sizeof(to));

		p->udp->source = to.sport;
		p->udp->dest = to.dport;
		p->udp->check = check;
		chd[0] = to.channel;
	}
	if (ip_finish(skb, v6, &from_ip, &to_ip, p->udp_len))
		return TC_ACT_SHOT;
	count(STAT_TO_PEER, data_len);
	count(STAT_FROM_PEER, data_len);
	return leave(route, ifindex);
}

// client_to_peer relays one ChannelData datagram from a client.
static __always_inline int client_to_peer(struct __sk_buff *skb, const int v6, struct pkt *p)
{
	void *data_end = (void *)(long)skb->data_end;
	__be16 *chd = (void *)(p->udp + 1);
	struct chan_key key = {};
	struct chan_val val, *ch = &val, *hashed = 0;
	struct chan4 *e4 = 0;
	struct chan6 *e6 = 0;
	struct addr saddr, daddr;
	__u16 data_len, channel, udp_len = p->udp_len, peer_port;
	__u64 now, daddr_tag = 0;
	enum route route;
	__u32 ifindex = 0;

	if ((void *)chd + CHANNEL_HDR > data_end)
		return TC_ACT_UNSPEC;
	channel = bpf_ntohs(chd[0]);
	data_len = bpf_ntohs(chd[1]);
	// Over UDP a ChannelData message is not padded: the datagram is exactly
	// the header and the data.
	if (channel < CHANNEL_MIN || channel > CHANNEL_MAX || udp_len != sizeof(struct udphdr) + CHANNEL_HDR + data_len)
		return TC_ACT_UNSPEC;

	key.client_ip = p->saddr;
	key.client_port = p->udp->source;
	key.listen_port = p->udp->dest;
	key.channel = channel;
	if (v6)
		e6 = lookup6(&key);
	else
		e4 = lookup4(p->saddr.w[3], key.client_port, key.listen_port, channel);
	if (e4) {
		chan_from4(&val, e4);
	} else if (e6) {
		daddr_tag = addr_tag(&p->daddr);
		chan_from6(&val, e6, &p->daddr, daddr_tag);
	} else {
		hashed = bpf_map_lookup_elem(&channels, &key);
		if (!hashed)
			return TC_ACT_UNSPEC;
		val = *hashed;
	}
	now = bpf_ktime_get_coarse_ns();
	if (now > ch->expires_ns)
		return TC_ACT_UNSPEC;
	if (!addr_eq(&ch->listen_ip, &p->daddr)) {
		if (!(ch->flags & CHAN_LISTEN_ANY))
			return TC_ACT_UNSPEC;
		// A listener on all addresses: teach the peer side which of our
		// addresses the client talks to.
		struct alloc *a = lookup_alloc(v6, ch->relay_port);

		if (a && a->client_port == key.client_port && addr_eq(&a->client_ip, &key.client_ip))
			a->listen_ip = p->daddr;
		ch->listen_ip = p->daddr;
		if (e4)
			e4->listen_ip = p->daddr.w[3];
		else if (e6)
			e6->listen_tag = daddr_tag;
		else if (hashed)
			hashed->listen_ip = p->daddr;
	}

	saddr = addr_zero(&ch->relay_ip) ? p->daddr : ch->relay_ip;
	daddr = ch->peer_ip;
	if (ch->flags & CHAN_PEER_LOCAL) {
		// A peer on this host: only on the ports the peer policy opens
		// there, and when it is another allocation's relay socket, to
		// that allocation's client directly.
		struct alloc *b;

		peer_port = bpf_ntohs(ch->peer_port);
		if (peer_port < ch->local_port_min || peer_port > ch->local_port_max)
			return TC_ACT_UNSPEC;
		b = lookup_alloc(v6, ch->peer_port);
		// (An allocation on that port but another address is not the
		// peer: a socket of its own, reached as below.)
		if (b && (addr_zero(&b->relay_ip) || addr_eq(&b->relay_ip, &ch->peer_ip))) {
			if (addr_zero(&ch->relay_ip))
				saddr = ch->peer_ip; // the source the kernel picks for a local destination
			return same_node(skb, v6, p, ch, b, &saddr, data_len, now);
		}
	}
	route = decide(skb, v6, p, ch->flags & CHAN_PEER_LOCAL, &saddr, &daddr, udp_len - CHANNEL_HDR, &ifindex);
	if (route == ROUTE_PASS)
		return TC_ACT_UNSPEC;
	if ((ch->flags & CHAN_QUOTA) && over_quota(ch->relay_port, DIR_TO_PEER, data_len)) {
		count(STAT_DROPPED_TO_PEER, data_len);
		return TC_ACT_SHOT;
	}

	// The new UDP header takes the place of the old one's second half and
	// the ChannelData header; then the old first half goes.
	{
		__be16 old_len = p->udp->len;
		struct {
			struct addr saddr, daddr;
			__be16 sport, dport;
			__be16 pseudo_len, len;
			__be16 channel, data_len;
		} from = { p->saddr, p->daddr, p->udp->source, p->udp->dest, old_len, old_len, chd[0], chd[1] };
		struct {
			struct addr saddr, daddr;
			__be16 sport, dport;
			__be16 pseudo_len, len;
		} to = { saddr, daddr, ch->relay_port, ch->peer_port, bpf_htons(udp_len - CHANNEL_HDR),
			 bpf_htons(udp_len - CHANNEL_HDR) };
		struct udphdr nu = {
			.source = to.sport,
			.dest = to.dport,
			.len = to.len,
		};

		// Forwarded: the checksum updated. Delivered locally: over IPv4
		// none (allowed there), so the moved headers need no checksum
		// offsets fixed; over IPv6 updated as well when the sender
		// finished it (a raw socket's, or a datagram from a device),
		// and computed in full when it left it for the device to finish
		// (see full_udp6_csum).
		if (route != ROUTE_LOCAL || (v6 && !looks_partial(v6, &p->saddr, &p->daddr, p->udp))) {
			nu.check = udp_csum_update(p->udp->check, (__be32 *)&from, sizeof(from), (__be32 *)&to, sizeof(to));
			if (v6 && !nu.check)
				return TC_ACT_UNSPEC; // the helper failed; IPv6 has no datagram without a checksum
		} else if (v6 && !(nu.check = full_udp6_csum(skb, &saddr, &daddr, &nu, L4_OFF(1) + sizeof(nu) + CHANNEL_HDR))) {
			return TC_ACT_UNSPEC;
		}

		// Written in place (the helper that stores bytes costs a call).
		struct udphdr *moved = (void *)(p->udp) + CHANNEL_HDR;

		if ((void *)(moved + 1) > data_end)
			return TC_ACT_SHOT;
		*moved = nu;
		if (bpf_skb_adjust_room(skb, -CHANNEL_HDR, BPF_ADJ_ROOM_NET, 0))
			return TC_ACT_SHOT;
		if (ip_finish(skb, v6, &saddr, &daddr, udp_len - CHANNEL_HDR))
			return TC_ACT_SHOT;
	}
	count(STAT_TO_PEER, data_len);
	return leave(route, ifindex);
}

// peer_to_client relays one datagram from a peer to a bound channel.
static __always_inline int peer_to_client(struct __sk_buff *skb, const int v6, struct pkt *p)
{
	struct alloc *a;
	struct peer_slot *s;
	struct addr saddr, daddr;
	__u16 udp_len = p->udp_len, data_len;
	enum route route;
	__u32 ifindex = 0;

	a = lookup_alloc(v6, p->udp->dest);
	if (!a)
		return TC_ACT_UNSPEC;
	s = find_peer(a, &p->saddr, p->udp->source, bpf_ktime_get_coarse_ns());
	if (!s || addr_zero(&a->listen_ip))
		return TC_ACT_UNSPEC;
	if (!addr_zero(&a->relay_ip) && !addr_eq(&a->relay_ip, &p->daddr))
		return TC_ACT_UNSPEC;
	if (udp_len < sizeof(struct udphdr) || udp_len > 0xffff - CHANNEL_HDR - IP_HLEN(v6))
		return TC_ACT_UNSPEC;
	data_len = udp_len - sizeof(struct udphdr);
	saddr = a->listen_ip;
	daddr = a->client_ip;

	route = decide(skb, v6, p, a->flags & ALLOC_CLIENT_LOCAL, &saddr, &daddr, udp_len + CHANNEL_HDR, &ifindex);
	if (route == ROUTE_PASS)
		return TC_ACT_UNSPEC;
	if ((a->flags & ALLOC_QUOTA) && over_quota(p->udp->dest, DIR_FROM_PEER, data_len)) {
		count(STAT_DROPPED_FROM_PEER, data_len);
		return TC_ACT_SHOT;
	}

	{
		struct {
			struct addr saddr, daddr;
			__be16 sport, dport;
			__be16 pseudo_len, len;
		} from = { p->saddr, p->daddr, p->udp->source, p->udp->dest, p->udp->len, p->udp->len };
		struct {
			struct addr saddr, daddr;
			__be16 sport, dport;
			__be16 pseudo_len, len;
			__be16 channel, data_len;
		} to = { saddr, daddr, a->listen_port, a->client_port,
			 bpf_htons(udp_len + CHANNEL_HDR), bpf_htons(udp_len + CHANNEL_HDR),
			 bpf_htons(s->channel), bpf_htons(data_len) };
		struct {
			struct udphdr udp;
			__be16 channel, data_len;
		} hdr = {
			.udp = {
				.source = to.sport,
				.dest = to.dport,
				.len = to.len,
				.check = (route == ROUTE_LOCAL && !v6) ? 0 :
					udp_csum_update(p->udp->check, (__be32 *)&from, sizeof(from), (__be32 *)&to, sizeof(to)),
			},
			.channel = to.channel,
			.data_len = to.data_len,
		};

		if (bpf_skb_adjust_room(skb, CHANNEL_HDR, BPF_ADJ_ROOM_NET, 0))
			return TC_ACT_SHOT;
		// Written in place (the helper that stores bytes costs a call).
		void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;

		if (data + L4_OFF(v6) + sizeof(hdr) > data_end)
			return TC_ACT_SHOT;
		__builtin_memcpy(data + L4_OFF(v6), &hdr, sizeof(hdr));
		if (ip_finish(skb, v6, &saddr, &daddr, udp_len + CHANNEL_HDR))
			return TC_ACT_SHOT;
	}
	count(STAT_FROM_PEER, data_len);
	return leave(route, ifindex);
}

// relay handles a UDP datagram of one family; parse has checked its headers.
static __always_inline int relay(struct __sk_buff *skb, const int v6, struct pkt *p)
{
	int ret = client_to_peer(skb, v6, p);

	if (ret != TC_ACT_UNSPEC)
		return ret;
	return peer_to_client(skb, v6, p);
}

static __always_inline int relay4(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct udphdr *udp = (void *)(ip + 1);
	struct pkt p = {};

	if ((void *)(udp + 1) > data_end)
		return TC_ACT_UNSPEC;
	if (ip->ihl != 5 || ip->protocol != IPPROTO_UDP || (ip->frag_off & bpf_htons(0x3fff)) ||
	    bpf_ntohs(ip->tot_len) != skb->len - sizeof(struct ethhdr))
		return TC_ACT_UNSPEC;
	p.udp_len = bpf_ntohs(udp->len);
	if (p.udp_len != skb->len - sizeof(struct ethhdr) - sizeof(*ip))
		return TC_ACT_UNSPEC;
	p.saddr.w[2] = p.daddr.w[2] = bpf_htonl(0xffff);
	p.saddr.w[3] = ip->saddr;
	p.daddr.w[3] = ip->daddr;
	p.udp = udp;
	p.eth = data;
	return relay(skb, 0, &p);
}

static __always_inline int relay6(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	struct udphdr *udp = (void *)(ip6 + 1);
	struct pkt p = {};

	if ((void *)(udp + 1) > data_end)
		return TC_ACT_UNSPEC;
	// No extension headers (fragments among them); a checksum, which IPv6
	// requires (zero is invalid: userspace drops it).
	if (ip6->nexthdr != IPPROTO_UDP || bpf_ntohs(ip6->payload_len) != skb->len - sizeof(struct ethhdr) - sizeof(*ip6))
		return TC_ACT_UNSPEC;
	p.udp_len = bpf_ntohs(udp->len);
	if (p.udp_len != bpf_ntohs(ip6->payload_len) || !udp->check)
		return TC_ACT_UNSPEC;
	__builtin_memcpy(&p.saddr, &ip6->saddr, sizeof(p.saddr));
	__builtin_memcpy(&p.daddr, &ip6->daddr, sizeof(p.daddr));
	// IPv4-mapped addresses on the wire name no IPv6 host, and an IPv4
	// channel's key holds its client's address in that form: such a
	// datagram must not pass for the IPv4 client's. The kernel's IPv6
	// input, which runs after this program, drops a mapped source.
	if (addr_v4mapped(&p.saddr) || addr_v4mapped(&p.daddr))
		return TC_ACT_UNSPEC;
	// Nor does the unspecified address, which a channel on a listener on
	// all addresses holds until it learns the one its client sends to.
	if (addr_zero(&p.daddr))
		return TC_ACT_UNSPEC;
	p.udp = udp;
	p.eth = data;
	return relay(skb, 1, &p);
}

SEC("tc")
int turnrelay(struct __sk_buff *skb)
{
	void *data, *data_end;
	struct ethhdr *eth;
	__u32 hdrs;
	int v6;

	if (skb->vlan_present || skb->gso_segs > 1 || skb->gso_size)
		return TC_ACT_UNSPEC;
	if (skb->protocol == bpf_htons(ETH_P_IP))
		v6 = 0;
	else if (skb->protocol == bpf_htons(ETH_P_IPV6))
		v6 = 1;
	else
		return TC_ACT_UNSPEC;
	// Headers must be in the linear part; 4 more bytes for ChannelData.
	hdrs = v6 ? L4_OFF(1) + sizeof(struct udphdr) : L4_OFF(0) + sizeof(struct udphdr);
	// (They nearly always are: then no helper call. The verifier makes a
	// program that writes packet data unclone the skb first.)
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + hdrs + CHANNEL_HDR > data_end) {
		if (bpf_skb_pull_data(skb, hdrs + CHANNEL_HDR) && bpf_skb_pull_data(skb, hdrs))
			return TC_ACT_UNSPEC;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	eth = data;
	if (data + sizeof(*eth) > data_end || eth->h_proto != skb->protocol)
		return TC_ACT_UNSPEC;
	return v6 ? relay6(skb) : relay4(skb);
}

char __license[] SEC("license") = "Dual BSD/GPL";
