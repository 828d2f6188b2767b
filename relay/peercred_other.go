//go:build !linux

package relay

import (
	"errors"
	"net"
)

// peerUID needs SO_PEERCRED, which only Linux has (the fast path is Linux
// only anyway).
func peerUID(*net.UnixConn) (int, error) { return -1, errors.ErrUnsupported }
