package relay

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/pion/logging"
)

// NewLogger builds the relay's slog logger. format is "json" or "text",
// level one of debug, info, warn, error.
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "json", "":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: must be json or text", format)
}

// pionLoggerFactory bridges pion's logging.LoggerFactory onto slog, so the
// TURN engine's messages land in the same stream with a "scope" attribute.
type pionLoggerFactory struct {
	log *slog.Logger
	// rateLimit limits pion's warnings and errors (see pionLogger).
	rateLimit bool
}

func (f pionLoggerFactory) NewLogger(scope string) logging.LeveledLogger {
	l := pionLogger{log: f.log.With("scope", "pion/"+scope), scope: scope}
	if f.rateLimit {
		l.rlog = newRateLog(l.log)
	}
	return l
}

// pionLogger implements logging.LeveledLogger. pion calls Debugf on hot
// paths (every relayed datagram), so each method checks the level before
// formatting: a disabled level costs one comparison, not a Sprintf.
//
// Its warnings and errors are rate-limited per format string: pion logs an
// error for every message with an unknown comprehension-required
// attribute, which any client can send as fast as it likes.
type pionLogger struct {
	log   *slog.Logger
	scope string
	rlog  *rateLog
}

func (l pionLogger) logf(level slog.Level, format string, args ...any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	msg := strings.TrimSpace(fmt.Sprintf(format, args...))
	if l.rlog != nil && level >= slog.LevelWarn {
		l.rlog.logAt(level, format, msg)
		return
	}
	l.log.Log(context.Background(), level, msg)
}

func (l pionLogger) Trace(msg string)                  { l.logf(slog.LevelDebug-4, "%s", msg) }
func (l pionLogger) Tracef(format string, args ...any) { l.logf(slog.LevelDebug-4, format, args...) }
func (l pionLogger) Debug(msg string)                  { l.logf(slog.LevelDebug, "%s", msg) }
func (l pionLogger) Debugf(format string, args ...any) { l.logf(slog.LevelDebug, format, args...) }
func (l pionLogger) Info(msg string)                   { l.logf(slog.LevelInfo, "%s", msg) }
func (l pionLogger) Infof(format string, args ...any)  { l.logf(slog.LevelInfo, format, args...) }
func (l pionLogger) Warn(msg string)                   { l.logf(slog.LevelWarn, "%s", msg) }
func (l pionLogger) Warnf(format string, args ...any)  { l.logf(slog.LevelWarn, format, args...) }
func (l pionLogger) Error(msg string)                  { l.logf(slog.LevelError, "%s", msg) }
func (l pionLogger) Errorf(format string, args ...any) { l.logf(slog.LevelError, format, args...) }
