package probe

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // the TURN REST API defines HMAC-SHA1
	"encoding/base64"
	"fmt"
	"time"
)

// RESTCredentials mints a TURN REST API credential (draft-uberti-behave-turn-rest)
// from a shared secret: username "expiry:user" with expiry in Unix seconds,
// password base64(HMAC-SHA1(secret, username)). Servers accept it until expiry.
func RESTCredentials(secret, user string, expires time.Time) (username, password string) {
	username = fmt.Sprintf("%d:%s", expires.Unix(), user)
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
