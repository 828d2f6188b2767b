package relay

import (
	"bytes"
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/turnpike-dev/turnpike/relay/config"
)

// notifyHUP subscribes to SIGHUP. It is called before the relay reports
// ready, so a SIGHUP sent to a ready relay never hits the default action
// (terminating the process).
func notifyHUP() (hup <-chan os.Signal, stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	return ch, func() { signal.Stop(ch) }
}

// watchConfig reloads the config files every ReloadInterval and on SIGHUP,
// until ctx is cancelled. Content is compared, not mtimes: the kubelet
// updates a mounted ConfigMap or Secret by swapping a symlink, which keeps
// the files' own timestamps meaningless.
func (r *Relay) watchConfig(ctx context.Context, hup <-chan os.Signal) {
	tick := time.NewTicker(r.opts.ReloadInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.log.Info("SIGHUP: reloading config and rediscovering addresses")
			r.Reload()
			r.stun.wakeUp()
		case <-tick.C:
			r.Reload()
			r.refreshNodeAddrs()
			r.sweepRotationKeys(timeNow())
			r.throttle.sweep(timeNow())
		}
	}
}

// Reload re-reads relay.yaml, credentials.yaml and the certificate files
// and applies what changed. An invalid file keeps the last good config.
// It is safe to call at any time, also concurrently.
func (r *Relay) Reload() {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	r.reloadCerts()
	files, err := config.ReadFiles(r.opts.ConfigPath, r.opts.CredentialsDir)
	if err != nil {
		r.reloadFailed(err)
		return
	}
	// This node's file (addresses.nodeFile) changes without relay.yaml.
	nodeBytes, _ := readOptional(r.current().cfg.Addresses.NodeFile)
	if files.Equal(r.lastFiles) && bytes.Equal(nodeBytes, r.lastNode) {
		return
	}
	// Remember the content even if it turns out broken, so the failure is
	// logged and counted once, not on every poll.
	r.lastFiles, r.lastNode = files, nodeBytes
	cfg, creds, err := files.Parse()
	if err != nil {
		r.reloadFailed(err)
		return
	}
	st, err := r.buildState(cfg, creds)
	if err != nil {
		r.reloadFailed(err)
		return
	}
	r.warnRestartNeeded(cfg)
	r.install(st)
	r.recheckPeers(st.policy)
	r.metrics.reloads.WithLabelValues("success").Inc()
	r.log.Info("config reloaded", "generation", r.gen.Load(), "credentialsGeneration", creds.Generation,
		"advertised", st.addrs.advertisedList(), "addressSource", st.addrs.source())
	// The STUN servers or this node's entry may have changed.
	r.stun.wakeUp()
}

// readOptional reads path, if it is set and exists; read errors surface
// where the content is used.
func readOptional(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	return os.ReadFile(path)
}

func (r *Relay) reloadFailed(err error) {
	r.metrics.reloads.WithLabelValues("failure").Inc()
	r.log.Error("config reload failed, keeping the last good config", "error", err.Error())
}

// warnRestartNeeded logs settings a reload cannot apply: sockets are opened
// once, and the realm is part of every long-term key.
func (r *Relay) warnRestartNeeded(cfg *config.Relay) {
	if cfg.SocketHash() != r.cfg.SocketHash() {
		r.log.Warn("listener or socket settings changed; they apply after a restart",
			"running", r.cfg.SocketHash(), "configured", cfg.SocketHash())
	}
	if cfg.Realm != r.cfg.Realm {
		r.log.Warn("realm changed; it applies after a restart", "running", r.cfg.Realm, "configured", cfg.Realm)
	}
}

func (r *Relay) reloadCerts() {
	for _, c := range r.certs {
		changed, err := c.reload()
		switch {
		case err != nil:
			r.log.Error("certificate reload failed, keeping the current certificate", "cert", c.certFile, "error", err.Error())
		case changed:
			r.log.Info("certificate reloaded", "cert", c.certFile)
		}
	}
}
