package relay

import (
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/pion/turn/v5"

	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/relay/restauth"
)

func TestCredentialsLookup(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	old, fresh := now.Add(-time.Hour), now.Add(time.Hour)
	c, err := newCredentials(&config.Credentials{
		Users: []config.User{
			{Username: "alice", Key: hex.EncodeToString(turn.GenerateAuthKey("alice", "r", "pw"))},
			// carol's password is rotating: the old one is valid until fresh.
			{Username: "carol", Key: hex.EncodeToString(turn.GenerateAuthKey("carol", "r", "new"))},
			{Username: "carol", Key: hex.EncodeToString(turn.GenerateAuthKey("carol", "r", "old")), NotAfter: &fresh},
			// dave's only key has expired.
			{Username: "dave", Key: hex.EncodeToString(turn.GenerateAuthKey("dave", "r", "pw")), NotAfter: &old},
		},
		SharedSecrets: []config.SharedSecret{
			{Name: "previous", Secret: "previous-secret-0123", NotAfter: &fresh},
			{Name: "current", Secret: "current-secret-01234", NotBefore: &old},
			{Name: "future", Secret: "future-secret-012345", NotBefore: &fresh},
		},
	}, "r")
	if err != nil {
		t.Fatal(err)
	}
	rest := fmt.Sprintf("%d:bob", now.Add(time.Minute).Unix())
	tests := []struct {
		name, user, realm string
		at                time.Time
		keys              int
		reason            string
	}{
		{"static user", "alice", "r", now, 1, ""},
		{"rotating static user inside the overlap: both keys", "carol", "r", now, 2, ""},
		{"rotating static user after the overlap: the new key", "carol", "r", fresh, 1, ""},
		{"static user whose only key expired", "dave", "r", now, 0, authExpired},
		{"wrong realm", "alice", "other", now, 0, authRealm},
		{"unknown static name", "mallory", "r", now, 0, authUnknownUser},
		{"REST inside overlap: two secrets", rest, "r", now, 2, ""},
		{"REST expired", rest, "r", now.Add(2 * time.Minute), 0, authExpired},
		{"REST expiry only", fmt.Sprint(now.Add(time.Minute).Unix()), "r", now, 2, ""},
		{"REST malformed", "soon:bob", "r", now, 0, authBadUsername},
	}
	for _, tc := range tests {
		res := c.lookup(tc.user, tc.realm, tc.at)
		if len(res.keys) != tc.keys || res.reason != tc.reason {
			t.Errorf("%s: lookup = %d keys %q, want %d keys %q", tc.name, len(res.keys), res.reason, tc.keys, tc.reason)
		}
	}
	// The key for a REST user is MD5(user:realm:base64(HMAC-SHA1(secret, user))).
	res := c.lookup(rest, "r", now)
	want := turn.GenerateAuthKey(rest, "r", restauth.Password("previous-secret-0123", rest))
	if !sameKey(res.keys[0], want) {
		t.Error("REST key does not match the TURN REST API derivation")
	}
	// After the previous secret's notAfter only the current one is valid.
	late := fresh.Add(time.Second)
	lateUser := fmt.Sprintf("%d:bob", late.Add(time.Minute).Unix())
	if got := c.lookup(lateUser, "r", late); len(got.keys) != 2 { // current + future (its notBefore passed)
		t.Errorf("after rotation: %d keys", len(got.keys))
	}
	noSecrets, _ := newCredentials(&config.Credentials{}, "r")
	if got := noSecrets.lookup(rest, "r", now); got.reason != authUnknownUser {
		t.Errorf("no secrets: reason %q", got.reason)
	}
}

func TestUserIDOf(t *testing.T) {
	for in, want := range map[string]string{"alice": "alice", "1800000000:bob": "bob", "1800000000": "1800000000", "a:b": "a:b"} {
		if got := userIDOf(in); got != want {
			t.Errorf("userIDOf(%q) = %q, want %q", in, got, want)
		}
	}
}
