package relay

import "time"

// The relay reads the clock through timeNow, so that tests can freeze or
// advance it (credential expiry in lifecycle_test.go, token buckets in
// relayconn_test.go). sleep, the pause of the bandwidth quota's pacing,
// is the same kind of seam.
var (
	timeNow = time.Now
	sleep   = time.Sleep
)
