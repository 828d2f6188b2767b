// Package restauth is the TURN REST API credential format
// (draft-uberti-behave-turn-rest): an app server that shares a secret with
// the relays mints a username "expiry:user" and the password
// base64(HMAC-SHA1(secret, username)); relays recompute the password and
// refuse the username after its expiry. The relay, the operator's issuing
// endpoint and `turnpike probe` all use this one implementation.
package restauth

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // the TURN REST API defines HMAC-SHA1
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// Password is base64(HMAC-SHA1(secret, username)).
func Password(secret, username string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Username is "expiry:user" with expiry in Unix seconds, or just the expiry
// when user is empty.
func Username(expiry time.Time, user string) string {
	u := strconv.FormatInt(expiry.Unix(), 10)
	if user != "" {
		u += ":" + user
	}
	return u
}

// Mint returns a username and password valid until now+ttl.
func Mint(secret, user string, now time.Time, ttl time.Duration) (username, password string) {
	username = Username(now.Add(ttl), user)
	return username, Password(secret, username)
}

// Expiry parses the expiry of a REST username ("expiry:user" or "expiry").
// ok is false when the username is not in that form.
func Expiry(username string) (expiry time.Time, ok bool) {
	ts, _, _ := strings.Cut(username, ":")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sec <= 0 {
		return time.Time{}, false
	}
	return time.Unix(sec, 0), true
}
