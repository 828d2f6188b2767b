package render

import (
	"bytes"
	"testing"

	"github.com/turnpike-dev/turnpike/controllers/render/rendertest"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/relay/config"
)

// TestRenderClassicSTUN: spec.classicSTUN false reaches relay.yaml, which
// the relay parses as off; true and unset leave relay.yaml as before.
func TestRenderClassicSTUN(t *testing.T) {
	yes, no := true, false
	for _, tt := range []struct {
		name    string
		classic *bool
		want    bool
	}{
		{"unset", nil, true},
		{"true", &yes, true},
		{"false", &no, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := renderRelayConfig(rendertest.TurnServer("ts", func(ts *turnpikev1.TurnServer) { ts.Spec.ClassicSTUN = tt.classic }), nil)
			data, err := config.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := config.ParseRelay(data)
			if err != nil {
				t.Fatalf("relay refuses the rendered relay.yaml: %v", err)
			}
			if got := parsed.STUN.ClassicEnabled(); got != tt.want {
				t.Errorf("relay.yaml says classic %v, want %v:\n%s", got, tt.want, data)
			}
			if tt.want && bytes.Contains(data, []byte("classic")) {
				t.Errorf("the default is written out:\n%s", data)
			}
		})
	}
}
