package relay

import "golang.org/x/time/rate"

// newMeters builds the two meters of a relay socket: counters for the
// transport and, with a bandwidth quota, a token bucket per direction.
func (r *Relay) newMeters(transport string, bytesPerSecond int64) (toPeer, fromPeer *meter) {
	return r.newMeter(dirToPeer, transport, newLimiter(bytesPerSecond)),
		r.newMeter(dirFromPeer, transport, newLimiter(bytesPerSecond))
}

// allocationMeters is newMeters for a TCP allocation: every peer connection
// of the allocation shares one token bucket per direction.
func (r *Relay) allocationMeters(transport string, bytesPerSecond int64) func() (toPeer, fromPeer *meter) {
	toLimit, fromLimit := newLimiter(bytesPerSecond), newLimiter(bytesPerSecond)
	return func() (*meter, *meter) {
		return r.newMeter(dirToPeer, transport, toLimit), r.newMeter(dirFromPeer, transport, fromLimit)
	}
}

func (r *Relay) newMeter(direction, transport string, limiter *rate.Limiter) *meter {
	return &meter{counters: r.traffic[direction+"/"+transport], limiter: limiter, dropped: r.bandwidthDrop.Inc}
}

// newLimiter is a token bucket of bytesPerSecond, or nil for unlimited. The
// burst (a tenth of a second, at least 64 KiB) absorbs a video keyframe.
func newLimiter(bytesPerSecond int64) *rate.Limiter {
	if bytesPerSecond <= 0 {
		return nil
	}
	burst := max(int(bytesPerSecond/10), 64*1024)
	return rate.NewLimiter(rate.Limit(bytesPerSecond), burst)
}
