package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/pion/stun/v4"
)

// Failure kinds, so callers and scripts can tell them apart.
const (
	KindUnreachable = "unreachable" // no TCP connection, or no answer in time
	KindTLS         = "tls"         // the server's TLS or DTLS certificate is not trusted
	KindAuth        = "auth"        // 401: wrong username or password
	KindForbidden   = "forbidden"   // 403 on Allocate
	KindPeerDenied  = "peer-denied" // 403 on CreatePermission: the peer policy
	KindQuota       = "quota"       // 486: allocation quota reached
	KindNoEcho      = "no-echo"     // allocated, but no ping came back
	KindOther       = "other"
)

// Error is a probe failure with a reason a human can act on.
type Error struct {
	Kind string
	// Code is the TURN error code, when the server answered with one.
	Code int
	// Step is what the probe was doing: "connect", "allocate", "permission", "ping".
	Step string
	Hint string
	Err  error
}

func (e *Error) Error() string {
	msg := e.Step + ": " + e.Err.Error()
	if e.Hint != "" {
		msg += "\n  " + e.Hint
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// classify turns an error of step into an *Error with a hint.
func classify(step string, server Server, err error) *Error {
	e := &Error{Kind: KindOther, Step: step, Err: err}
	var turnErr *stun.TurnError
	var netErr net.Error
	switch {
	case errors.As(err, &turnErr):
		e.Code = int(turnErr.ErrorCodeAttr.Code)
		e.Kind, e.Hint = turnErrorHint(step, e.Code)
	case isCertificateError(err):
		e.Kind = KindTLS
		e.Hint = fmt.Sprintf("%s answered, but its certificate is not trusted: pass --ca FILE with the CA that signed it (or the certificate itself), or --insecure to skip the check (testing only)", server.Address())
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout(),
		strings.Contains(err.Error(), "retransmissions failed"), strings.Contains(err.Error(), "transaction closed"):
		e.Kind = KindUnreachable
		e.Hint = fmt.Sprintf("no answer from %s over %s: is the server running, the port open in every firewall, and the transport right?", server.Address(), transportName(server))
	case step == "connect":
		e.Kind = KindUnreachable
		e.Hint = fmt.Sprintf("cannot connect to %s over %s", server.Address(), transportName(server))
	}
	return e
}

// isCertificateError reports whether err is a failed verification of the
// server's certificate, over TLS or DTLS (pion/dtls does not always wrap
// the x509 error, so its text is the fallback).
func isCertificateError(err error) bool {
	var verify *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &host) ||
		errors.As(err, &invalid) || strings.Contains(err.Error(), "x509: ")
}

const authHint = "authentication failed: wrong username or password, a credential minted from another shared secret, or one that expired"

func turnErrorHint(step string, code int) (kind, hint string) {
	switch {
	case code == int(stun.CodeUnauthorized):
		return KindAuth, authHint
	case code == int(stun.CodeBadRequest) && step == "allocate":
		// pion/turn answers a wrong password or an unknown user with 400
		// instead of RFC 8489's 401 (turnpike's relay answers 401).
		return KindAuth, authHint + " (the server answered 400 Bad Request, as servers built on pion/turn do for bad credentials)"
	case code == int(stun.CodeForbidden) && step == "permission":
		return KindPeerDenied, "the server's peer policy refuses this peer; turnpike refuses loopback and link-local always, private ranges and its nodes' own addresses unless spec.peerPolicy.allow lists them"
	case code == int(stun.CodeForbidden):
		return KindForbidden, "the server refuses allocations for this user"
	case code == int(stun.CodeAllocQuotaReached):
		return KindQuota, "allocation quota reached (486): too many allocations for this user or this relay; see spec.quotas"
	case code == int(stun.CodeUnsupportedTransProto):
		return KindOther, "the server does not relay this transport"
	}
	return KindOther, ""
}

func transportName(s Server) string {
	switch {
	case s.Secure && s.Transport == "tcp":
		return "TLS"
	case s.Secure:
		return "DTLS"
	}
	return strings.ToUpper(s.Transport)
}
