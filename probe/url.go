package probe

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Server is a parsed TURN URI (RFC 7065): turn:host[:port][?transport=udp|tcp]
// or turns:host[:port][?transport=tcp|udp].
type Server struct {
	// Secure is true for turns: (TLS over TCP, DTLS over UDP).
	Secure bool
	Host   string
	Port   int
	// Transport is "udp" or "tcp".
	Transport string
}

// Address is host:port.
func (s Server) Address() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// String is the URI again, with every part explicit.
func (s Server) String() string {
	scheme := "turn"
	if s.Secure {
		scheme = "turns"
	}
	host := s.Host
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return fmt.Sprintf("%s:%s:%d?transport=%s", scheme, host, s.Port, s.Transport)
}

// ParseURL parses a turn: or turns: URI. Without a port, turn: means 3478
// and turns: 5349; without a transport, turn: means udp and turns: tcp (TLS),
// as browsers assume.
func ParseURL(raw string) (Server, error) {
	scheme, rest, ok := strings.Cut(raw, ":")
	var s Server
	switch {
	case !ok:
		return s, fmt.Errorf("%q is not a TURN URL: want turn:host:port?transport=udp or turns:host:port", raw)
	case scheme == "turn":
		s.Port, s.Transport = 3478, "udp"
	case scheme == "turns":
		s.Secure, s.Port, s.Transport = true, 5349, "tcp"
	default:
		return s, fmt.Errorf("%q: scheme must be turn: or turns:, not %s:", raw, scheme)
	}
	hostport, query, _ := strings.Cut(rest, "?")
	if strings.HasPrefix(hostport, "//") {
		return s, fmt.Errorf("%q: TURN URLs have no //: write %s:%s", raw, scheme, strings.TrimPrefix(hostport, "//"))
	}
	if err := s.parseHostPort(hostport); err != nil {
		return s, fmt.Errorf("%q: %w", raw, err)
	}
	if query != "" {
		q, err := url.ParseQuery(query)
		if err != nil {
			return s, fmt.Errorf("%q: %w", raw, err)
		}
		if t := q.Get("transport"); t != "" {
			t = strings.ToLower(t)
			if t != "udp" && t != "tcp" {
				return s, fmt.Errorf("%q: transport must be udp or tcp, not %q", raw, t)
			}
			s.Transport = t
		}
	}
	return s, nil
}

func (s *Server) parseHostPort(hostport string) error {
	if hostport == "" {
		return fmt.Errorf("no host")
	}
	// A bare IPv6 address without brackets or port.
	if strings.Count(hostport, ":") > 1 && !strings.HasPrefix(hostport, "[") {
		s.Host = hostport
		return nil
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		// No port.
		s.Host = strings.Trim(hostport, "[]")
		return nil
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("bad port %q", port)
	}
	s.Host, s.Port = host, p
	return nil
}
