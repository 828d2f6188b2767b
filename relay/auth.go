package relay

import (
	"crypto/hmac"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/pion/turn/v5"

	"github.com/turnpike-dev/turnpike/relay/config"
	"github.com/turnpike-dev/turnpike/relay/restauth"
)

// Reasons an authentication fails; the "reason" label of
// turnpike_relay_auth_failures_total.
const (
	authUnknownUser  = "unknown_user"
	authRealm        = "wrong_realm"
	authExpired      = "expired"
	authBadUsername  = "malformed_username"
	authNoSecret     = "no_valid_secret"
	authBadIntegrity = "bad_integrity" // wrong password: MESSAGE-INTEGRITY did not match
)

var authFailureReasons = []string{authUnknownUser, authRealm, authExpired, authBadUsername, authNoSecret, authBadIntegrity}

// credentials is the compiled credentials.yaml: static long-term keys and the
// REST shared secrets. It is immutable; a reload builds a new one.
type credentials struct {
	realm      string
	generation int64
	// users maps username to its long-term keys MD5(user:realm:pass):
	// several while a password rotates, each valid until its notAfter.
	users   map[string][]userKey
	secrets []config.SharedSecret
}

type userKey struct {
	key      []byte
	notAfter *time.Time
}

func newCredentials(c *config.Credentials, realm string) (*credentials, error) {
	cr := &credentials{realm: realm, generation: c.Generation, users: map[string][]userKey{}, secrets: c.SharedSecrets}
	for _, u := range c.Users {
		key, err := hex.DecodeString(u.Key)
		if err != nil {
			return nil, fmt.Errorf("user %q: key: %w", u.Username, err)
		}
		cr.users[u.Username] = append(cr.users[u.Username], userKey{key, u.NotAfter})
	}
	return cr, nil
}

// validUserKeys returns a static user's keys that are valid at now, and
// whether the user exists at all.
func (c *credentials) validUserKeys(username string, now time.Time) (keys [][]byte, known bool) {
	all, known := c.users[username]
	for _, k := range all {
		if k.notAfter == nil || now.Before(*k.notAfter) {
			keys = append(keys, k.key)
		}
	}
	return keys, known
}

// validSecrets returns the shared secrets whose window contains now.
func (c *credentials) validSecrets(now time.Time) []config.SharedSecret {
	var out []config.SharedSecret
	for _, s := range c.secrets {
		if s.NotBefore != nil && now.Before(*s.NotBefore) {
			continue
		}
		if s.NotAfter != nil && !now.Before(*s.NotAfter) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// keyResult is the outcome of looking a user up.
type keyResult struct {
	keys   [][]byte // candidate long-term keys; several while secrets overlap
	reason string   // why there are none
}

// lookup finds the candidate long-term keys for username. Static users win
// over REST usernames, so a static user may be named like "1700000000".
func (c *credentials) lookup(username, realm string, now time.Time) keyResult {
	if subtle.ConstantTimeCompare([]byte(realm), []byte(c.realm)) != 1 {
		return keyResult{reason: authRealm}
	}
	if keys, known := c.validUserKeys(username, now); known {
		if len(keys) == 0 {
			return keyResult{reason: authExpired}
		}
		return keyResult{keys: keys}
	}
	if len(c.secrets) == 0 {
		return keyResult{reason: authUnknownUser}
	}
	expiry, ok := restauth.Expiry(username)
	switch {
	case !ok && strings.Contains(username, ":"):
		return keyResult{reason: authBadUsername} // meant as a REST name "expiry:user", but broken
	case !ok:
		return keyResult{reason: authUnknownUser}
	}
	if !now.Before(expiry) {
		return keyResult{reason: authExpired}
	}
	valid := c.validSecrets(now)
	if len(valid) == 0 {
		return keyResult{reason: authNoSecret}
	}
	keys := make([][]byte, 0, len(valid))
	for _, s := range valid {
		keys = append(keys, turn.GenerateAuthKey(username, c.realm, restauth.Password(s.Secret, username)))
	}
	return keyResult{keys: keys}
}

// sameKey compares keys in constant time.
func sameKey(a, b []byte) bool { return hmac.Equal(a, b) }
