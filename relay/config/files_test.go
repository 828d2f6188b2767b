package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadFilesAndParse covers the one way the relay loads its files, at
// startup and on reload: which file is missing or broken, and that no
// credentials directory means no users rather than an error.
func TestReadFilesAndParse(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	relayPath := write(RelayFile, validRelay)
	brokenRelay := write("broken/"+RelayFile, "realm: [")
	withCreds := filepath.Dir(write("creds/"+CredentialsFile, "version: "+Version+"\ngeneration: 7\n"))
	brokenCreds := filepath.Dir(write("badcreds/"+CredentialsFile, "nonsense: 1\n"))

	tests := []struct {
		name, relay, credsDir string
		wantErr               string // substring; "" for success
		wantGeneration        int64
	}{
		{"no credentials dir: no users", relayPath, "", "", 0},
		{"both files", relayPath, withCreds, "", 7},
		{"relay.yaml missing", filepath.Join(dir, "missing.yaml"), withCreds, "missing.yaml", 0},
		{"credentials.yaml missing", relayPath, t.TempDir(), CredentialsFile, 0},
		{"relay.yaml broken", brokenRelay, withCreds, RelayFile, 0},
		{"credentials.yaml broken", relayPath, brokenCreds, CredentialsFile, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files, err := ReadFiles(tt.relay, tt.credsDir)
			var creds *Credentials
			if err == nil {
				_, creds, err = files.Parse()
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if creds.Version != Version || creds.Generation != tt.wantGeneration {
				t.Fatalf("credentials %+v, want version %s generation %d", creds, Version, tt.wantGeneration)
			}
		})
	}
}

func TestFilesEqual(t *testing.T) {
	a := Files{Relay: []byte("r"), Credentials: []byte("c")}
	for _, tt := range []struct {
		name string
		b    Files
		want bool
	}{
		{"same content", Files{Relay: []byte("r"), Credentials: []byte("c")}, true},
		{"relay.yaml differs", Files{Relay: []byte("R"), Credentials: []byte("c")}, false},
		{"credentials.yaml differs", Files{Relay: []byte("r"), Credentials: []byte("C")}, false},
		{"credentials.yaml gone", Files{Relay: []byte("r")}, false},
	} {
		if got := a.Equal(tt.b); got != tt.want {
			t.Errorf("%s: Equal = %v, want %v", tt.name, got, tt.want)
		}
	}
}
