// Package adversarial holds the relay's hostile-input suite: tests that run
// the built `turnpike relay` inside a network namespace lab and attack it
// over real sockets the way a hostile client or peer would, then check
// what the relay did (its answers, its CPU time, its file descriptors, its
// metrics, its log lines, and the packets that reached the wire).
//
// The tests need root, ip, iptables, ip6tables and prlimit; without them a
// test skips, or fails when the environment variable CI is set.
//
// TURNPIKE_BIN names the binary to attack; unset, the tests build this
// checkout's. Pointing it at an older build shows which attacks that build
// falls to.
//
// The soak (`make soak`, build tag soak) runs here too.
package adversarial
