package image

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// TestBuild builds the image as `make image` does, then reads it back as a
// runtime would: the index's platforms, each config, the host platform's
// filesystem unpacked and its /turnpike run. A second build of one platform
// must give that platform's image the same digest (reproducible builds).
// The first run on a machine cross-compiles everything (minutes); after
// that the go build cache makes it take seconds.
func TestBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds turnpike for two platforms")
	}
	host := Platform{"linux", runtime.GOARCH}
	platforms := []Platform{{"linux", "amd64"}, {"linux", "arm64"}}
	if !slices.Contains(platforms, host) || runtime.GOOS != "linux" {
		t.Skipf("runs the unpacked binary: needs a linux/amd64 or linux/arm64 host, not %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	out := t.TempDir()
	opts := Options{Meta: testMeta, Platforms: platforms, SourceDir: "../..", Go: filepath.Join(runtime.GOROOT(), "bin", "go"), Out: out}
	idx, err := Build(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}

	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range m.Manifests {
		got = append(got, d.Platform.OS+"/"+d.Platform.Architecture)
	}
	if !slices.Equal(got, []string{"linux/amd64", "linux/arm64"}) {
		t.Errorf("index platforms %q, want linux/amd64 and linux/arm64", got)
	}
	if m.Annotations["org.opencontainers.image.revision"] != testMeta.Revision {
		t.Errorf("index annotations %v, want the labels", m.Annotations)
	}

	for _, p := range platforms {
		img, err := FromLayout(LayoutDir(out), p)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		// Literal values: what the chart and the relay DaemonSet rely on.
		if cfg.Config.User != "65532:65532" || !slices.Equal(cfg.Config.Entrypoint, []string{"/turnpike"}) {
			t.Errorf("%s: user %q, entrypoint %q; want 65532:65532 and /turnpike", p, cfg.Config.User, cfg.Config.Entrypoint)
		}
		if err := CheckConfig(cfg); err != nil {
			t.Errorf("%s: %v", p, err)
		}
		if cfg.Architecture != p.Arch || cfg.Config.Labels["org.opencontainers.image.version"] != testMeta.Version {
			t.Errorf("%s: config architecture %s, labels %v", p, cfg.Architecture, cfg.Config.Labels)
		}
		checkSBOM(t, SBOMPath(out, p))
	}

	// Every platform's filesystem, unpacked, starts: this machine's
	// directly, the other under qemu-user-static.
	for _, p := range platforms {
		checkUnpacked(t, LayoutDir(out), p)
	}

	checkPush(t, LayoutDir(out), idx)

	again := opts
	again.Platforms, again.Out = []Platform{host}, t.TempDir()
	idx2, err := Build(context.Background(), again)
	if err != nil {
		t.Fatal(err)
	}
	first, second := manifestDigest(t, idx, host), manifestDigest(t, idx2, host)
	if first != second {
		t.Errorf("two builds of %s gave %s and %s: the build is not reproducible", host, first, second)
	}
}

// checkPush pushes the layout to a registry on loopback (go-containerregistry's
// registry server) as make image-push does, and pulls the index back.
func checkPush(t *testing.T, layoutDir string, built v1.ImageIndex) {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/turnpike:test"
	digest, err := Push(context.Background(), layoutDir, ref)
	if err != nil {
		t.Fatal(err)
	}
	want, err := built.Digest()
	if err != nil || digest != want {
		t.Errorf("pushed index %s, built %s (%v)", digest, want, err)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Index(r)
	if err != nil {
		t.Fatalf("pulling %s back: %v", ref, err)
	}
	if got, err := pulled.Digest(); err != nil || got != want {
		t.Errorf("pulled index %s, pushed %s (%v)", got, want, err)
	}
	// Every blob the index names is there and matches its digest.
	if err := validate.Index(pulled); err != nil {
		t.Errorf("pulled index: %v", err)
	}
}

// checkUnpacked unpacks one platform's filesystem, runs its /turnpike
// version and reads its /etc/passwd.
func checkUnpacked(t *testing.T, layoutDir string, p Platform) {
	t.Helper()
	img, err := FromLayout(layoutDir, p)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	cfg, err := Unpack(img, root)
	if err != nil {
		t.Fatal(err)
	}
	passwd, err := os.ReadFile(filepath.Join(root, "etc", "passwd"))
	if err != nil || !strings.Contains(string(passwd), ":65532:65532:") {
		t.Errorf("%s: unpacked /etc/passwd %q, %v: want UID 65532", p, passwd, err)
	}
	cmd, err := Command(p, filepath.Join(root, cfg.Config.Entrypoint[0]), "version")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Errorf("%s: %v", p, err)
		} else {
			t.Logf("%s: not started: %v", p, err)
		}
		return
	}
	version, err := cmd.Output()
	if err != nil || strings.TrimSpace(string(version)) != testMeta.Version {
		t.Errorf("%s: unpacked %s version: %q, %v; want %s", p, cfg.Config.Entrypoint[0], version, err, testMeta.Version)
	}
}

func manifestDigest(t *testing.T, idx v1.ImageIndex, p Platform) v1.Hash {
	t.Helper()
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range m.Manifests {
		if d.Platform.OS == p.OS && d.Platform.Architecture == p.Arch {
			return d.Digest
		}
	}
	t.Fatalf("no %s in the index", p)
	return v1.Hash{}
}

// checkSBOM reads an SBOM as SPDX JSON and looks for the relay's engine.
func checkSBOM(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc spdxDocument
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for _, p := range doc.Packages {
		if p.Name == "github.com/pion/turn/v5" && p.VersionInfo != "" {
			return
		}
	}
	t.Errorf("%s (%s) lists no github.com/pion/turn/v5 among %d packages", path, doc.SPDXVersion, len(doc.Packages))
}
