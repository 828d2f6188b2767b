package restauth

import (
	"testing"
	"time"
)

// The vector is computed independently with
// `printf %s 1700000000:alice | openssl dgst -sha1 -hmac secret -binary | base64`.
func TestPasswordVector(t *testing.T) {
	if got := Password("secret", "1700000000:alice"); got != "d8soP47RbdIKLDUOpnJPVQyq5Ts=" {
		t.Fatalf("Password = %q", got)
	}
}

func TestMintAndExpiry(t *testing.T) {
	now := time.Unix(1700000000, 0)
	u, p := Mint("secret", "alice", now, time.Hour)
	if u != "1700003600:alice" || p != Password("secret", u) {
		t.Fatalf("Mint = %q %q", u, p)
	}
	for _, tt := range []struct {
		username string
		want     int64
		ok       bool
	}{
		{"1700003600:alice", 1700003600, true},
		{"1700003600", 1700003600, true},
		{"1700003600:a:b", 1700003600, true},
		{"alice", 0, false},
		{"-5:alice", 0, false},
		{"", 0, false},
	} {
		got, ok := Expiry(tt.username)
		if ok != tt.ok || (ok && got.Unix() != tt.want) {
			t.Errorf("Expiry(%q) = %v %v", tt.username, got, ok)
		}
	}
}
