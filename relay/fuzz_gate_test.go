package relay

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // TURN REST credentials are HMAC-SHA1 by definition
	"encoding/base64"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/turnpike-dev/turnpike/relay/config"
)

// FuzzGate feeds the request gate every message the framing lets through,
// from a client that holds an allocation, with two shared secrets valid
// (so the rotation path runs too). Whatever the message:
//   - when pion may ask the PermissionHandler (CreatePermission,
//     ChannelBind, Connect), the channel the gate recorded for the quota is
//     the one pion will bind: the CHANNEL-NUMBER of a ChannelBind, else none;
//   - a rotation key is remembered only for a request whose
//     MESSAGE-INTEGRITY checks out with one of the user's valid keys, so
//     unauthenticated traffic cannot fill the map;
//   - an answer the gate sends itself is a response to that very request.
func FuzzGate(f *testing.F) {
	r := fuzzGateRelay(f)
	client := &net.UDPAddr{IP: net.IPv4(198, 51, 100, 7), Port: 40000}
	local := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3478}
	k, _ := keyFor(client, local)
	// The allocation, recorded as pion reports it.
	r.eventHandler().OnAllocationCreated(client, local, "udp", testUser, testRealm, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 20000}, 0)
	if !r.allocs.has(k) {
		f.Fatal("the allocation was not recorded")
	}

	restUser := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10) + ":" + testUser
	for _, secret := range []string{testSecret, testSecret + "-next"} {
		key := turn.GenerateAuthKey(restUser, testRealm, restPassword(secret, restUser))
		f.Add(stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodChannelBind, stun.ClassRequest),
			rawAttr(stun.AttrChannelNumber, []byte{0x40, 0x01, 0, 0}), xorPeer(netip.MustParseAddrPort("198.18.0.2:9")),
			stun.NewUsername(restUser), stun.NewRealm(testRealm), stun.NewNonce("n"), stun.MessageIntegrity(key)).Raw)
	}
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodChannelBind, stun.ClassRequest),
		rawAttr(stun.AttrChannelNumber, []byte{0x7f, 0xff})).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		rawAttr(stun.AttrRequestedTransport, []byte{17, 0, 0, 0}), rawAttr(0x0031, []byte{1})).Raw)

	f.Fuzz(func(t *testing.T, msg []byte) {
		if kind, reason := checkDatagram(msg); reason != "" || kind != frameSTUN {
			return // the framing drops it before the gate
		}
		r.rotationKeys.Range(func(key, _ any) bool { r.rotationKeys.Delete(key); return true })
		r.allocs.setPendingChannel(k, -2) // neither -1 nor a channel: the gate must set it
		var replies [][]byte
		forward := r.gate(append([]byte(nil), msg...), client, local, func(b []byte) { replies = append(replies, append([]byte(nil), b...)) })

		m := &stun.Message{Raw: append([]byte(nil), msg...)}
		decoded := m.Decode() == nil
		if forward && decoded && asksPermission(m) {
			want := -1
			if m.Type.Method == stun.MethodChannelBind {
				if v, err := m.Get(stun.AttrChannelNumber); err == nil && len(v) >= 2 {
					want = int(binary.BigEndian.Uint16(v))
				}
			}
			r.allocs.mu.Lock()
			got := r.allocs.allocs[k].pendingChannel
			r.allocs.mu.Unlock()
			if got != want {
				t.Fatalf("pending channel %d, pion will bind %d", got, want)
			}
		}

		r.rotationKeys.Range(func(_, v any) bool {
			if !decoded || !integrityChecks(r, m) {
				t.Fatal("a rotation key was remembered for a request whose integrity does not check")
			}
			return true
		})

		for _, b := range replies {
			res := &stun.Message{Raw: b}
			if err := res.Decode(); err != nil {
				t.Fatalf("the gate answered with an undecodable message: %v", err)
			}
			if !decoded || res.TransactionID != m.TransactionID || res.Type.Method != m.Type.Method ||
				(res.Type.Class != stun.ClassSuccessResponse && res.Type.Class != stun.ClassErrorResponse) {
				t.Fatalf("the gate answered %v %x to %x", res.Type, res.TransactionID, msg[:min(len(msg), 20)])
			}
		}
	})
}

// asksPermission reports whether pion, handling m, may call the
// PermissionHandler, which reads the pending channel: CreatePermission,
// ChannelBind and Connect requests.
func asksPermission(m *stun.Message) bool {
	if m.Type.Class != stun.ClassRequest {
		return false
	}
	switch m.Type.Method {
	case stun.MethodCreatePermission, stun.MethodChannelBind, stun.MethodConnect:
		return true
	}
	return false
}

// integrityChecks reports whether m's MESSAGE-INTEGRITY checks with one of
// the valid keys of its username.
func integrityChecks(r *Relay, m *stun.Message) bool {
	var username stun.Username
	var realm stun.Realm
	if username.GetFrom(m) != nil || realm.GetFrom(m) != nil {
		return false
	}
	for _, key := range r.current().creds.lookup(username.String(), realm.String(), timeNow()).keys {
		if stun.MessageIntegrity(key).Check(m) == nil {
			return true
		}
	}
	return false
}

// restPassword is the TURN REST password of username under secret.
func restPassword(secret, username string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// fuzzGateRelay builds a relay from files (no sockets: the gate needs its
// state only) with two shared secrets valid at once.
func fuzzGateRelay(f *testing.F) *Relay {
	dir := f.TempDir()
	cfg := &config.Relay{
		Version: config.Version, Realm: testRealm,
		Listeners:      []config.Listener{{Name: "udp", Protocol: config.UDP, Port: 3478}},
		RelayPortRange: config.PortRange{Min: 20000, Max: 29999},
		Addresses:      config.Addresses{Bind: []string{"127.0.0.1"}},
		Quotas:         config.Quotas{ChannelsPerAllocation: 2},
	}
	creds := baseCredentials()
	creds.SharedSecrets = append(creds.SharedSecrets, config.SharedSecret{Name: "s2", Secret: testSecret + "-next"})
	for name, v := range map[string]any{config.RelayFile: cfg, config.CredentialsFile: creds} {
		b, err := config.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			f.Fatal(err)
		}
	}
	r, err := newRelay(Options{ConfigPath: filepath.Join(dir, config.RelayFile), CredentialsDir: dir, LogOutput: io.Discard, NodeName: "-"})
	if err != nil {
		f.Fatal(err)
	}
	return r
}
