package relay

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Anything an unauthenticated client (or a peer) can trigger at will is
// logged through a rateLog: the first occurrence of a key is written at
// once, later ones within logInterval only counted, and the count is
// written with the next line of that key. A flood of bad packets is then a
// few lines a minute, not a log flood, and still says how big it was.

// logInterval is the shortest time between two lines of one key.
const logInterval = 10 * time.Second

type rateLog struct {
	log *slog.Logger
	mu  sync.Mutex
	// keys holds, per key, when its last line was written and how many
	// occurrences were suppressed since.
	keys map[string]*rateLogKey
	now  func() time.Time
}

type rateLogKey struct {
	last       time.Time
	suppressed int
}

// maxRateLogKeys bounds the map: keys are reasons, never client addresses,
// so this is a safety net against a programming mistake.
const maxRateLogKeys = 1024

func newRateLog(log *slog.Logger) *rateLog {
	return &rateLog{log: log, keys: map[string]*rateLogKey{}, now: time.Now}
}

// log writes msg at level, unless a line of key was written within
// logInterval; then it only counts. args are slog attributes of this
// occurrence.
func (l *rateLog) logAt(level slog.Level, key, msg string, args ...any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	now := l.now()
	l.mu.Lock()
	k, ok := l.keys[key]
	if !ok {
		if len(l.keys) >= maxRateLogKeys {
			clear(l.keys)
		}
		k = &rateLogKey{}
		l.keys[key] = k
	}
	if ok && now.Sub(k.last) < logInterval {
		k.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := k.suppressed
	k.last, k.suppressed = now, 0
	l.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	l.log.Log(context.Background(), level, msg, args...)
}

func (l *rateLog) info(key, msg string, args ...any) { l.logAt(slog.LevelInfo, key, msg, args...) }
func (l *rateLog) warn(key, msg string, args ...any) { l.logAt(slog.LevelWarn, key, msg, args...) }
