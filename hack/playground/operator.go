package main

import (
	"io"
	"os/exec"
	"syscall"
	"time"
)

// operatorProcess is `turnpike operator` running against the playground.
type operatorProcess struct {
	cmd    *exec.Cmd
	exited chan error
}

// startOperator runs the operator binary exactly as a cluster would run it,
// so the playground exercises the real wiring of every controller. Ports it
// does not need here are off; credential staging is short, so a rotated
// secret reaches apps in seconds instead of minutes.
func startOperator(turnpike, kubeconfig string, logs io.Writer) (*operatorProcess, error) {
	cmd := exec.Command(turnpike, "operator",
		"--kubeconfig", kubeconfig,
		"--leader-elect=false",
		"--metrics-bind-address=0",
		"--health-probe-bind-address=0",
		"--issuer-bind-address=",
		"--credential-staging-delay=5s",
		"--relay-image=turnpike:playground",
	)
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group: Ctrl-C reaches the playground, which stops
		// the operator itself, in order, after the relay.
		Setpgid: true,
		// And if the playground dies without cleaning up, so does the operator.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &operatorProcess{cmd: cmd, exited: make(chan error, 1)}
	go func() { p.exited <- cmd.Wait() }()
	return p, nil
}

// stop asks the operator to exit and kills it after 10s.
func (p *operatorProcess) stop() {
	say("stopping the operator")
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}
