//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// turnrelay: the kernel half of turnpike's relay fast path. A TC ingress
// program that relays TURN ChannelData over UDP/IPv4 once the relay (in
// userspace) has bound the channel and written it into the maps below:
//
//   client -> relay listener, ChannelData(channel, data)
//       becomes  relay socket -> peer, UDP(data)
//   peer -> relay socket, UDP(data)
//       becomes  relay listener -> client, ChannelData(channel, data)
//
// Anything the program is not sure about passes on untouched (TC_ACT_UNSPEC),
// and the userspace relay handles it as if the program were not there.
// The relay regenerates turnrelay_bpfel.o and turnrelay_bpfeb.o from this file
// with `make generate-bpf` (clang); `go build` uses the committed objects.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
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
#define NSEC_PER_SEC 1000000000ULL

// A channel, seen from the client side: what a ChannelData datagram from the
// client carries. Addresses and ports are in network byte order.
struct chan_key {
	__be32 client_ip;
	__be16 client_port;
	__be16 listen_port;
	__u16 channel; // host byte order
	__u16 pad;
};

// flags of chan_val and peer_val
#define DEST_LOCAL 1 // the destination (peer or client) is an address of this host

struct chan_val {
	__be32 peer_ip;
	__be32 relay_ip;  // the relay socket's address; 0 when it binds all addresses
	__be32 listen_ip; // the listener's address; 0 when it binds all addresses
	__be16 peer_port;
	__be16 relay_port;
	__u32 flags;
	__u32 pad;
	__u64 expires_ns; // CLOCK_MONOTONIC (bpf_ktime_get_ns)
};

// The same channel, seen from the peer side: a datagram to the relay socket.
struct peer_key {
	__be32 peer_ip;
	__be16 peer_port;
	__be16 relay_port;
};

struct peer_val {
	__be32 client_ip;
	__be32 relay_ip;
	// listen_ip is the address the client sends to; learnt from the
	// client's datagrams when the listener binds all addresses (0 until
	// then, and the peer's datagrams go through userspace).
	__be32 listen_ip;
	__be16 client_port;
	__be16 listen_port;
	__u16 channel;
	__u16 pad;
	__u32 flags;
	__u64 expires_ns;
};

// The bandwidth quota of one allocation and direction: a token bucket.
struct bucket_key {
	__u16 relay_port; // host byte order
	__u16 direction;
};

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

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_CHANNELS);
	__type(key, struct peer_key);
	__type(value, struct peer_val);
} peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_CHANNELS);
	__type(key, struct bucket_key);
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

// over_quota takes bytes from the allocation's bucket for direction and says
// whether there were not enough. No bucket: no quota.
static __always_inline int over_quota(__be16 relay_port, __u16 direction, __u32 bytes)
{
	struct bucket_key key = { .relay_port = bpf_ntohs(relay_port), .direction = direction };
	struct bucket *b = bpf_map_lookup_elem(&buckets, &key);
	__u64 now, elapsed;
	int over;

	if (!b)
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

// The IPv4/UDP pseudo header.
struct pseudo_hdr {
	__be32 saddr;
	__be32 daddr;
	__u8 zero;
	__u8 protocol;
	__be16 len;
};

// looks_partial says whether a UDP checksum field holds only the pseudo
// header's sum: a datagram sent on this host whose checksum the device is
// to finish (CHECKSUM_PARTIAL). Such a datagram may only be delivered
// locally after the rewrite (the kernel would finish its checksum at the
// wrong offset once the headers move). A real checksum equal to that value
// (one in 65536) only sends the datagram through userspace.
static __always_inline int looks_partial(struct iphdr *ip, struct udphdr *udp)
{
	struct pseudo_hdr ph = {
		.saddr = ip->saddr,
		.daddr = ip->daddr,
		.protocol = IPPROTO_UDP,
		.len = udp->len,
	};
	__s64 sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), 0);

	return sum >= 0 && udp->check == csum_fold(sum);
}

// udp_csum_update returns the UDP checksum after the words in from were
// replaced by those in to (RFC 1624). A zero checksum (none) stays zero.
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

static __always_inline void ip_rewrite(struct iphdr *ip, __be32 saddr, __be32 daddr, __u16 tot_len)
{
	__s64 sum;

	ip->saddr = saddr;
	ip->daddr = daddr;
	ip->tot_len = bpf_htons(tot_len);
	ip->ttl = RELAY_TTL;
	ip->check = 0;
	sum = bpf_csum_diff(0, 0, (__be32 *)ip, sizeof(*ip), 0);
	ip->check = ~csum_fold(sum);
}

// How a rewritten datagram leaves.
enum route {
	ROUTE_PASS,      // give the original to userspace
	ROUTE_LOCAL,     // deliver to a socket of this host
	ROUTE_REDIRECT,  // transmit on route_ifindex
};

// decide picks the route for a datagram that came in on ingress_ifindex and,
// rewritten, goes from saddr to daddr. Both ends on this host (arriving on
// lo): deliver locally. Both ends elsewhere: forward by the kernel's routing
// table, as the relay's own socket would send it. A mix passes to userspace:
// a local source arriving from outside is a martian, and a datagram from a
// local sender may carry a checksum the device has yet to finish.
static __always_inline enum route decide(struct __sk_buff *skb, struct ethhdr *eth, struct iphdr *ip, struct udphdr *udp,
					 int dest_local, __be32 saddr, __be32 daddr, __u16 tot_len, __u32 *ifindex)
{
	int from_lo = skb->ingress_ifindex == LOOPBACK_IFINDEX;
	struct bpf_fib_lookup fib = {};
	long rc;

	if (dest_local)
		return from_lo ? ROUTE_LOCAL : ROUTE_PASS;
	if (from_lo || looks_partial(ip, udp))
		return ROUTE_PASS;
	fib.family = 2; // AF_INET
	fib.l4_protocol = IPPROTO_UDP;
	fib.tot_len = tot_len;
	fib.ipv4_src = saddr;
	fib.ipv4_dst = daddr;
	fib.ifindex = skb->ingress_ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return ROUTE_PASS; // no neighbour yet, forwarding off, needs fragmenting, ...: userspace
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	*ifindex = fib.ifindex;
	return ROUTE_REDIRECT;
}

static __always_inline int leave(enum route route, __u32 ifindex)
{
	if (route == ROUTE_REDIRECT)
		return bpf_redirect(ifindex, 0);
	return TC_ACT_OK;
}

#define HDRS (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr))

// client_to_peer relays one ChannelData datagram from a client.
static __always_inline int client_to_peer(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = (void *)ip + sizeof(*ip);
	__be16 *chd = (void *)udp + sizeof(*udp);
	struct chan_key key = {};
	struct chan_val *ch;
	struct peer_key pk;
	struct peer_val *pv;
	__u16 udp_len, data_len, channel;
	__be32 saddr;
	enum route route;
	__u32 ifindex = 0;

	if ((void *)chd + CHANNEL_HDR > data_end)
		return TC_ACT_UNSPEC;
	channel = bpf_ntohs(chd[0]);
	data_len = bpf_ntohs(chd[1]);
	udp_len = bpf_ntohs(udp->len);
	// Over UDP a ChannelData message is not padded: the datagram is exactly
	// the header and the data.
	if (channel < CHANNEL_MIN || channel > CHANNEL_MAX || udp_len != sizeof(*udp) + CHANNEL_HDR + data_len)
		return TC_ACT_UNSPEC;

	key.client_ip = ip->saddr;
	key.client_port = udp->source;
	key.listen_port = udp->dest;
	key.channel = channel;
	ch = bpf_map_lookup_elem(&channels, &key);
	if (!ch || bpf_ktime_get_ns() > ch->expires_ns)
		return TC_ACT_UNSPEC;
	if (ch->listen_ip && ch->listen_ip != ip->daddr)
		return TC_ACT_UNSPEC;

	// A listener on all addresses: teach the peer side which of our
	// addresses the client talks to. (A listener on one address has it
	// from the relay, and this lookup is saved.)
	if (!ch->listen_ip) {
		pk.peer_ip = ch->peer_ip;
		pk.peer_port = ch->peer_port;
		pk.relay_port = ch->relay_port;
		pv = bpf_map_lookup_elem(&peers, &pk);
		if (pv && pv->listen_ip != ip->daddr && pv->client_ip == key.client_ip && pv->client_port == key.client_port)
			pv->listen_ip = ip->daddr;
	}

	saddr = ch->relay_ip ? ch->relay_ip : ip->daddr;
	route = decide(skb, eth, ip, udp, ch->flags & DEST_LOCAL, saddr, ch->peer_ip,
		       sizeof(*ip) + udp_len - CHANNEL_HDR, &ifindex);
	if (route == ROUTE_PASS)
		return TC_ACT_UNSPEC;
	if (over_quota(ch->relay_port, DIR_TO_PEER, data_len)) {
		count(STAT_DROPPED_TO_PEER, data_len);
		return TC_ACT_SHOT;
	}

	// The new UDP header takes the place of the old one's second half and
	// the ChannelData header; then the old first half goes.
	{
		__be16 old_len = udp->len;
		struct {
			__be32 saddr, daddr;
			__be16 sport, dport;
			__be16 pseudo_len, len;
			__be16 channel, data_len;
		} from = { ip->saddr, ip->daddr, udp->source, udp->dest, old_len, old_len, chd[0], chd[1] };
		struct {
			__be32 saddr, daddr;
			__be16 sport, dport;
			__be16 pseudo_len, len;
		} to = { saddr, ch->peer_ip, ch->relay_port, ch->peer_port, bpf_htons(udp_len - CHANNEL_HDR),
			 bpf_htons(udp_len - CHANNEL_HDR) };
		struct udphdr nu = {
			.source = to.sport,
			.dest = to.dport,
			.len = to.len,
			// Local delivery: no checksum (allowed for IPv4), so the
			// moved headers need no checksum offsets fixed.
			.check = route == ROUTE_LOCAL ? 0 : udp_csum_update(udp->check, (__be32 *)&from, sizeof(from), (__be32 *)&to, sizeof(to)),
		};
		__be32 daddr = ch->peer_ip;

		if (bpf_skb_store_bytes(skb, sizeof(*eth) + sizeof(*ip) + CHANNEL_HDR, &nu, sizeof(nu), 0))
			return TC_ACT_SHOT;
		if (bpf_skb_adjust_room(skb, -CHANNEL_HDR, BPF_ADJ_ROOM_NET, 0))
			return TC_ACT_SHOT;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		if (data + HDRS > data_end)
			return TC_ACT_SHOT;
		ip = data + sizeof(struct ethhdr);
		ip_rewrite(ip, saddr, daddr, sizeof(*ip) + udp_len - CHANNEL_HDR);
	}
	count(STAT_TO_PEER, data_len);
	return leave(route, ifindex);
}

// peer_to_client relays one datagram from a peer to a bound channel.
static __always_inline int peer_to_client(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = (void *)ip + sizeof(*ip);
	struct peer_key key;
	struct peer_val *pv;
	__u16 udp_len, data_len;
	enum route route;
	__u32 ifindex = 0;

	if ((void *)udp + sizeof(*udp) > data_end)
		return TC_ACT_UNSPEC;
	key.peer_ip = ip->saddr;
	key.peer_port = udp->source;
	key.relay_port = udp->dest;
	pv = bpf_map_lookup_elem(&peers, &key);
	if (!pv || bpf_ktime_get_ns() > pv->expires_ns || !pv->listen_ip)
		return TC_ACT_UNSPEC;
	if (pv->relay_ip && pv->relay_ip != ip->daddr)
		return TC_ACT_UNSPEC;
	udp_len = bpf_ntohs(udp->len);
	if (udp_len < sizeof(*udp) || udp_len > 0xffff - CHANNEL_HDR - sizeof(*ip))
		return TC_ACT_UNSPEC;
	data_len = udp_len - sizeof(*udp);

	route = decide(skb, eth, ip, udp, pv->flags & DEST_LOCAL, pv->listen_ip, pv->client_ip,
		       sizeof(*ip) + udp_len + CHANNEL_HDR, &ifindex);
	if (route == ROUTE_PASS)
		return TC_ACT_UNSPEC;
	if (over_quota(udp->dest, DIR_FROM_PEER, data_len)) {
		count(STAT_DROPPED_FROM_PEER, data_len);
		return TC_ACT_SHOT;
	}

	{
		struct {
			__be32 saddr, daddr;
			__be16 sport, dport;
			__be16 pseudo_len, len;
		} from = { ip->saddr, ip->daddr, udp->source, udp->dest, udp->len, udp->len };
		struct {
			__be32 saddr, daddr;
			__be16 sport, dport;
			__be16 pseudo_len, len;
			__be16 channel, data_len;
		} to = { pv->listen_ip, pv->client_ip, pv->listen_port, pv->client_port,
			 bpf_htons(udp_len + CHANNEL_HDR), bpf_htons(udp_len + CHANNEL_HDR),
			 bpf_htons(pv->channel), bpf_htons(data_len) };
		struct {
			struct udphdr udp;
			__be16 channel, data_len;
		} hdr = {
			.udp = {
				.source = to.sport,
				.dest = to.dport,
				.len = to.len,
				.check = route == ROUTE_LOCAL ? 0 : udp_csum_update(udp->check, (__be32 *)&from, sizeof(from), (__be32 *)&to, sizeof(to)),
			},
			.channel = to.channel,
			.data_len = to.data_len,
		};
		__be32 saddr = to.saddr, daddr = to.daddr;

		if (bpf_skb_adjust_room(skb, CHANNEL_HDR, BPF_ADJ_ROOM_NET, 0))
			return TC_ACT_SHOT;
		if (bpf_skb_store_bytes(skb, sizeof(struct ethhdr) + sizeof(struct iphdr), &hdr, sizeof(hdr), 0))
			return TC_ACT_SHOT;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		if (data + HDRS > data_end)
			return TC_ACT_SHOT;
		ip = data + sizeof(struct ethhdr);
		ip_rewrite(ip, saddr, daddr, sizeof(*ip) + udp_len + CHANNEL_HDR);
	}
	count(STAT_FROM_PEER, data_len);
	return leave(route, ifindex);
}

SEC("tc")
int turnrelay(struct __sk_buff *skb)
{
	void *data, *data_end;
	struct ethhdr *eth;
	struct iphdr *ip;
	int ret;

	if (skb->protocol != bpf_htons(ETH_P_IP) || skb->vlan_present || skb->gso_segs > 1 || skb->gso_size)
		return TC_ACT_UNSPEC;
	// Headers must be in the linear part; 4 more bytes for ChannelData.
	if (bpf_skb_pull_data(skb, HDRS + CHANNEL_HDR) && bpf_skb_pull_data(skb, HDRS))
		return TC_ACT_UNSPEC;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	ip = data + sizeof(*eth);
	if (data + HDRS > data_end)
		return TC_ACT_UNSPEC;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 || ip->protocol != IPPROTO_UDP ||
	    (ip->frag_off & bpf_htons(0x3fff)) || bpf_ntohs(ip->tot_len) != skb->len - sizeof(*eth))
		return TC_ACT_UNSPEC;
	if (bpf_ntohs(((struct udphdr *)(ip + 1))->len) != skb->len - sizeof(*eth) - sizeof(*ip))
		return TC_ACT_UNSPEC;
	ret = client_to_peer(skb);
	if (ret != TC_ACT_UNSPEC)
		return ret;
	return peer_to_client(skb);
}

char __license[] SEC("license") = "Dual BSD/GPL";
