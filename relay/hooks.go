package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/turnpike-dev/turnpike/relay/restauth"
)

// The functions pion calls: authentication, the allocation quota, the peer
// permission check and allocation events. They read the current state once
// per call, so a reload applies from the next request on.

// rotationKey names a request for rotationKeys: the client's address (in
// alloc.client; the listener part stays empty, see keyForRequest) and the
// username it authenticates with.
type rotationKey struct {
	alloc    allocKey
	username string
}

// authenticate is pion's AuthHandler. It returns the long-term key for the
// username; pion then checks MESSAGE-INTEGRITY with it (and reports a
// mismatch through EventHandler.OnAuth).
func (r *Relay) authenticate(ra *turn.RequestAttributes) (userID string, key []byte, ok bool) {
	res := r.current().creds.lookup(ra.Username, ra.Realm, timeNow())
	if res.reason != "" {
		r.countAuthFailure(res.reason, ra.Username, ra.SrcAddr)
		return "", nil, false
	}
	key = res.keys[0]
	if len(res.keys) > 1 {
		// Several keys are valid (secrets or passwords rotating): use the one
		// the gate found to match this very request (verifyIntegrity).
		if k, found := keyForRequest(ra.SrcAddr, ra.Username); found {
			if v, ok := r.rotationKeys.LoadAndDelete(k); ok {
				key = v.(matchedKey).key
			}
		}
	}
	return userIDOf(ra.Username), key, true
}

// keyForRequest builds the rotationKey for a request from client. pion does
// not pass the listener to the AuthHandler; the client address alone is
// unique enough here because a mismatch only picks a wrong key (the request
// then fails integrity), never grants anything.
func keyForRequest(client net.Addr, username string) (rotationKey, bool) {
	_, ap, ok := addrPort(client)
	return rotationKey{alloc: allocKey{client: ap}, username: username}, ok
}

// userIDOf is the identity quotas count by: the user part of a REST
// username "expiry:user" (which changes with every expiry), else the name.
func userIDOf(username string) string {
	if _, user, found := strings.Cut(username, ":"); found && user != "" {
		if _, isREST := restauth.Expiry(username); isREST {
			return user
		}
	}
	return username
}

// inspectRequest records, for the PermissionHandler, which ChannelBind (if
// any) allocation k's client is sending now: pion asks the handler without
// saying which request it serves.
func (r *Relay) inspectRequest(m *stun.Message, k allocKey) {
	pending := -1
	if m.Type.Method == stun.MethodChannelBind {
		if v, err := m.Get(stun.AttrChannelNumber); err == nil && len(v) >= 2 {
			pending = int(binary.BigEndian.Uint16(v))
		}
	}
	r.allocs.setPendingChannel(k, pending)
}

// verified is the gate's verdict on a request's credentials.
type verified struct {
	key      []byte // the long-term key MESSAGE-INTEGRITY matched; nil when there is none to check
	username string
	failed   bool // credentials present but refused: unknown user, wrong realm or password, expired
}

// verifyIntegrity checks m's MESSAGE-INTEGRITY against the keys of its
// username, as pion will, and counts a failure by its reason. A request
// without MESSAGE-INTEGRITY, or without the USERNAME, REALM and NONCE that
// must come with it, is left to pion (401, or 400 for the latter). While
// several keys are valid for a name (rotation), the one that matched is
// remembered for authenticate; only a request whose integrity checks out is
// remembered, so unauthenticated traffic cannot fill rotationKeys.
func (r *Relay) verifyIntegrity(m *stun.Message, client net.Addr) verified {
	var username stun.Username
	var realm stun.Realm
	if !m.Contains(stun.AttrMessageIntegrity) || !m.Contains(stun.AttrNonce) ||
		username.GetFrom(m) != nil || realm.GetFrom(m) != nil {
		return verified{}
	}
	name := username.String()
	res := r.current().creds.lookup(name, realm.String(), timeNow())
	if res.reason != "" {
		r.countAuthFailure(res.reason, name, client)
		return verified{failed: true}
	}
	for _, key := range res.keys {
		if stun.MessageIntegrity(key).Check(m) != nil {
			continue
		}
		if len(res.keys) > 1 {
			if k, ok := keyForRequest(client, name); ok {
				r.rotationKeys.Store(k, matchedKey{key: key, at: timeNow()})
			}
		}
		return verified{key: key, username: name}
	}
	r.countAuthFailure(authBadIntegrity, name, client)
	return verified{failed: true}
}

// countAuthFailure counts and logs a failed authentication, and charges it
// to the client's throttle.
func (r *Relay) countAuthFailure(reason, username string, client net.Addr) {
	r.metrics.authFailures.WithLabelValues(reason).Inc()
	r.authFailed(client)
	r.log.Debug("authentication failed", "username", username, "client", addrString(client), "reason", reason)
}

// matchedKey is a rotationKeys entry.
type matchedKey struct {
	key []byte
	at  time.Time
}

// rotationKeyTTL bounds how long an unused rotationKeys entry lives. An
// entry is normally consumed within the same request; one is left behind
// only when pion refuses the request before asking for the key (a stale
// nonce, say).
const rotationKeyTTL = time.Minute

// sweepRotationKeys drops entries no request consumed.
// It also drops the gate's signing keys of unanswered requests and closes
// the reservations nobody redeemed.
func (r *Relay) sweepRotationKeys(now time.Time) {
	r.sweepSigners(now)
	r.reservations.sweep(now)
	r.rotationKeys.Range(func(k, v any) bool {
		if now.Sub(v.(matchedKey).at) > rotationKeyTTL {
			r.rotationKeys.Delete(k)
		}
		return true
	})
}

// admitAllocation is pion's QuotaHandler: false answers 486.
func (r *Relay) admitAllocation(userID, _ string, client net.Addr) bool {
	if r.draining.Load() {
		r.metrics.allocations.WithLabelValues(allocDraining).Inc()
		r.log.Info("allocation refused: draining", "user", userID, "client", addrString(client))
		return false
	}
	q := r.current().quotas
	total, ofUser := r.allocs.counts(userID)
	quota := ""
	switch {
	case q.AllocationsTotal > 0 && total >= q.AllocationsTotal:
		quota = quotaAllocationsTotal
	case q.AllocationsPerUser > 0 && ofUser >= q.AllocationsPerUser:
		quota = quotaAllocationsPerUser
	}
	if quota != "" {
		r.metrics.allocations.WithLabelValues(allocQuota).Inc()
		r.metrics.quotaRejections.WithLabelValues(quota).Inc()
		r.log.Info("allocation refused: quota", "quota", quota, "user", userID, "client", addrString(client))
		return false
	}
	return true
}

// permissionHandler is pion's PermissionHandler for one listener. pion calls
// it for CreatePermission, ChannelBind and (RFC 6062) Connect.
func (r *Relay) permissionHandler(network string, port uint16) turn.PermissionHandler {
	return func(client net.Addr, peerIP net.IP) bool {
		peer, _ := netip.AddrFromSlice(peerIP)
		st := r.current()
		if ok, reason := st.policy.check(peer); !ok {
			r.metrics.peersDenied.WithLabelValues(reason).Inc()
			r.rlog.info("peer-denied:"+reason, "peer denied", "peer", peer.String(), "reason", reason, "client", addrString(client))
			return false
		}
		_, ap, ok := addrPort(client)
		if !ok {
			return false
		}
		k := allocKey{network: network, port: port, client: ap}
		q, channel := r.allocs.admitPeer(k, canonicalPeer(peer), st.quotas.PermissionsPerAllocation, st.quotas.ChannelsPerAllocation)
		if q != "" {
			r.metrics.quotaRejections.WithLabelValues(q).Inc()
			r.rlog.info("peer-quota:"+q, "peer refused: quota", "quota", q, "peer", peer.String(), "client", addrString(client))
			return false
		}
		r.permissionAdmitted(k, canonicalPeer(peer), channel)
		return true
	}
}

// eventHandler mirrors allocations, permissions and channels into the
// tracker (for quotas and gauges) and counts wrong passwords.
func (r *Relay) eventHandler() turn.EventHandler {
	withKey := func(src, dst net.Addr, fn func(allocKey)) {
		if k, ok := keyFor(src, dst); ok {
			fn(k)
		}
	}
	peerOf := func(ip net.IP) netip.Addr {
		a, _ := netip.AddrFromSlice(ip)
		return canonicalPeer(a)
	}
	return turn.EventHandler{
		OnAuth: func(src, _ net.Addr, _, username, _, method string, verdict bool) {
			if !verdict {
				r.metrics.authFailures.WithLabelValues(authBadIntegrity).Inc()
				r.authFailed(src)
				r.log.Debug("authentication failed", "username", username, "method", method, "client", addrString(src), "reason", authBadIntegrity)
			}
		},
		OnAllocationCreated: func(src, dst net.Addr, _, userID, _ string, relayAddr net.Addr, _ int) {
			withKey(src, dst, func(k allocKey) { r.allocs.add(k, userID, isIPv6(relayAddr)) })
			r.metrics.allocations.WithLabelValues(allocSuccess).Inc()
			r.log.Debug("allocation created", "user", userID, "client", addrString(src), "relay", addrString(relayAddr))
		},
		OnAllocationDeleted: func(src, dst net.Addr, _, userID, _ string) {
			// pion has deleted the allocation's channels first (and so the
			// fast path's entries).
			withKey(src, dst, r.allocs.remove)
			r.log.Debug("allocation deleted", "user", userID, "client", addrString(src))
		},
		OnPermissionCreated: func(src, dst net.Addr, _, _, _ string, _ net.Addr, peer net.IP) {
			withKey(src, dst, func(k allocKey) { r.allocs.permissionAdded(k, peerOf(peer)) })
		},
		OnPermissionDeleted: func(src, dst net.Addr, _, _, _ string, _ net.Addr, peer net.IP) {
			withKey(src, dst, func(k allocKey) {
				r.allocs.permissionRemoved(k, peerOf(peer))
				r.permissionDeleted(k, peerOf(peer))
			})
		},
		OnChannelCreated: func(src, dst net.Addr, _, _, _ string, relayAddr, peer net.Addr, number uint16) {
			withKey(src, dst, func(k allocKey) {
				r.allocs.channelAdded(k, number)
				r.channelCreated(k, dst, relayAddr, peer, number)
			})
		},
		OnChannelDeleted: func(src, dst net.Addr, _, _, _ string, _, _ net.Addr, number uint16) {
			withKey(src, dst, func(k allocKey) {
				r.allocs.channelRemoved(k, number)
				r.channelDeleted(k, number)
			})
		},
	}
}
