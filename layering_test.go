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
// libraries or the operator. The operator's pure builders (controllers/render)
// use API types and apply configurations only, never a client, so their
// tests need no control plane.
func TestLayering(t *testing.T) {
	const module = "github.com/turnpike-dev/turnpike/"
	for _, tc := range []struct {
		pkgs      string
		forbidden func(dep string) bool
		why       string
		// direct checks only what pkgs import themselves, not what their
		// imports import: the API types and client-go's apply
		// configurations, which the pure builders may use, link a scheme
		// builder and client-go's rest package.
		direct bool
	}{
		{"./controllers/...", func(dep string) bool {
			return strings.HasPrefix(dep, module+"relay") &&
				dep != module+"relay/config" && dep != module+"relay/restauth"
		}, "controllers may use relay/config and relay/restauth only", false},
		{"./controllers/render/...", func(dep string) bool {
			return strings.HasPrefix(dep, "sigs.k8s.io/controller-runtime") ||
				strings.HasPrefix(dep, "k8s.io/client-go/kubernetes") || strings.HasPrefix(dep, "k8s.io/client-go/rest") ||
				strings.HasPrefix(dep, "k8s.io/client-go/tools") || dep == module+"controllers"
		}, "the pure builders may not use a client, a cache or a manager: their tests run without an API server", true},
		{"./relay/...", func(dep string) bool {
			return strings.HasPrefix(dep, module+"controllers") || strings.HasPrefix(dep, module+"api") ||
				strings.HasPrefix(dep, "k8s.io/client-go") || strings.HasPrefix(dep, "sigs.k8s.io/controller-runtime") ||
				strings.HasPrefix(dep, "k8s.io/api/") || strings.HasPrefix(dep, "k8s.io/apimachinery")
		}, "the relay may not depend on the operator, the API types or Kubernetes client libraries", false},
	} {
		args, least := []string{"list", "-deps", tc.pkgs}, 10
		if tc.direct {
			args, least = []string{"list", "-f", `{{join .Imports " "}}`, tc.pkgs}, 5
		}
		out, err := exec.Command("go", args...).Output()
		if err != nil {
			t.Fatalf("go %s: %v", strings.Join(args, " "), err)
		}
		deps := strings.Fields(string(out))
		if len(deps) < least {
			t.Fatalf("go %s listed only %v", strings.Join(args, " "), deps)
		}
		for _, dep := range deps {
			if tc.forbidden(dep) {
				t.Errorf("%s depends on %s: %s", tc.pkgs, dep, tc.why)
			}
		}
	}
}
