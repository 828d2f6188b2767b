package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayering keeps the promise of docs/architecture.md: the operator and
// the relay meet only in relay/config (relay.yaml, credentials.yaml, the
// /status document) and the small REST-credential leaf relay/restauth. The
// operator never links the relay's engine, and the relay (the process that
// parses untrusted input on every node) never links the Kubernetes client
// libraries or the operator.
func TestLayering(t *testing.T) {
	const module = "github.com/turnpike-dev/turnpike/"
	for _, tc := range []struct {
		pkgs      string
		forbidden func(dep string) bool
		why       string
	}{
		{"./controllers/...", func(dep string) bool {
			return strings.HasPrefix(dep, module+"relay") &&
				dep != module+"relay/config" && dep != module+"relay/restauth"
		}, "controllers may use relay/config and relay/restauth only"},
		{"./relay/...", func(dep string) bool {
			return strings.HasPrefix(dep, module+"controllers") || strings.HasPrefix(dep, module+"api") ||
				strings.HasPrefix(dep, "k8s.io/client-go") || strings.HasPrefix(dep, "sigs.k8s.io/controller-runtime") ||
				strings.HasPrefix(dep, "k8s.io/api/") || strings.HasPrefix(dep, "k8s.io/apimachinery")
		}, "the relay may not depend on the operator, the API types or Kubernetes client libraries"},
	} {
		out, err := exec.Command("go", "list", "-deps", tc.pkgs).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", tc.pkgs, err)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 10 {
			t.Fatalf("go list -deps %s listed only %v", tc.pkgs, deps)
		}
		for _, dep := range deps {
			if tc.forbidden(dep) {
				t.Errorf("%s depends on %s: %s", tc.pkgs, dep, tc.why)
			}
		}
	}
}
