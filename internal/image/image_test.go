package image

import (
	"archive/tar"
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"iter"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/crypto/x509roots/fallback/bundle"
)

var testMeta = Meta{Version: "v9.9.9", Revision: "0123abc", Source: "https://example.com/turnpike", Created: time.Unix(1700000000, 0).UTC()}

func TestTarEntries(t *testing.T) {
	entries := []entry{
		{path: "/etc", dir: true, mode: 0o755},
		{path: "/etc/passwd", mode: 0o644, data: []byte("x\n")},
		{path: "/home/nonroot", dir: true, mode: 0o700, uid: UID, gid: GID},
		{path: "/turnpike", mode: 0o755, data: []byte("\x7fELF")},
	}
	data, err := tarEntries(entries, testMeta.Created)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(data))
	for _, want := range entries {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("entry %s: %v", want.path, err)
		}
		wantName := strings.TrimPrefix(want.path, "/")
		wantType := byte(tar.TypeReg)
		if want.dir {
			wantName += "/"
			wantType = tar.TypeDir
		}
		body, _ := io.ReadAll(tr)
		if h.Name != wantName || h.Typeflag != wantType || h.Mode != want.mode || h.Uid != want.uid || h.Gid != want.gid ||
			!h.ModTime.Equal(testMeta.Created) || h.Uname != "" || !bytes.Equal(body, want.data) {
			t.Errorf("entry %+v, body %q; want %+v", h, body, want)
		}
	}
	if _, err := tr.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("after the entries: %v, want EOF", err)
	}
	again, _ := tarEntries(entries, testMeta.Created)
	if !bytes.Equal(data, again) {
		t.Error("the same entries gave different tar bytes")
	}
}

func TestBaseEntries(t *testing.T) {
	files := map[string]entry{}
	for _, e := range baseEntries([]byte("CA")) {
		files[e.path] = e
	}
	if !strings.Contains(string(files["/etc/passwd"].data), ":65532:65532:") {
		t.Errorf("/etc/passwd has no UID 65532:\n%s", files["/etc/passwd"].data)
	}
	if !strings.Contains(string(files["/etc/group"].data), ":65532:") {
		t.Errorf("/etc/group has no GID 65532:\n%s", files["/etc/group"].data)
	}
	if got := string(files["/etc/ssl/certs/ca-certificates.crt"].data); got != "CA" {
		t.Errorf("CA file %q, want the bundle given", got)
	}
	if h := files["/home/nonroot"]; h.uid != UID || !h.dir {
		t.Errorf("/home/nonroot %+v, want a directory of UID %d", h, UID)
	}
	if tmp := files["/tmp"]; tmp.mode != 0o1777 {
		t.Errorf("/tmp mode %o, want 1777", tmp.mode)
	}
}

func TestCABundlePEM(t *testing.T) {
	plain, constrained := []byte("plain-der"), []byte("constrained-der")
	roots := func(yield func(bundle.Root) bool) {
		_ = yield(bundle.Root{Certificate: plain}) &&
			yield(bundle.Root{Certificate: constrained, Constraint: func([]*x509.Certificate) error { return nil }})
	}
	var got [][]byte
	for rest := caBundlePEM(iter.Seq[bundle.Root](roots)); ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		got = append(got, b.Bytes)
	}
	if len(got) != 1 || !bytes.Equal(got[0], plain) {
		t.Errorf("bundle holds %q, want only the unconstrained root", got)
	}

	// The real bundle: every certificate parses, and there are enough of them
	// to check a public server's chain.
	n, rest := 0, caBundlePEM(bundle.Roots())
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			t.Fatalf("certificate %d: %v", n, err)
		}
		n++
	}
	if n < 100 {
		t.Errorf("the CA bundle has %d certificates, want the NSS roots (over 100)", n)
	}
}

func TestParsePlatform(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Platform
		ok   bool
	}{
		{"linux/amd64", Platform{"linux", "amd64"}, true},
		{"linux/arm64", Platform{"linux", "arm64"}, true},
		{"linux", Platform{}, false},
		{"/arm64", Platform{}, false},
		{"linux/", Platform{}, false},
		{"linux/arm/v7", Platform{}, false},
	} {
		got, err := ParsePlatform(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("ParsePlatform(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestCheckConfig(t *testing.T) {
	good := configFile(testMeta, Platform{"linux", "arm64"})
	if good.Architecture != "arm64" || good.OS != "linux" || !good.Created.Equal(testMeta.Created) {
		t.Errorf("config platform %s/%s created %v", good.OS, good.Architecture, good.Created)
	}
	for _, l := range []struct{ key, want string }{
		{"org.opencontainers.image.source", testMeta.Source},
		{"org.opencontainers.image.revision", testMeta.Revision},
		{"org.opencontainers.image.version", testMeta.Version},
	} {
		if got := good.Config.Labels[l.key]; got != l.want {
			t.Errorf("label %s = %q, want %q", l.key, got, l.want)
		}
	}
	for _, tc := range []struct {
		name   string
		change func(*v1.Config)
		ok     bool
	}{
		{"as built", func(*v1.Config) {}, true},
		{"root user", func(c *v1.Config) { c.User = "0" }, false},
		{"named user", func(c *v1.Config) { c.User = "nonroot" }, false},
		{"shell entrypoint", func(c *v1.Config) { c.Entrypoint = []string{"/bin/sh", "-c"} }, false},
		{"cmd given", func(c *v1.Config) { c.Cmd = []string{"operator"} }, false},
		{"no revision label", func(c *v1.Config) { delete(c.Labels, "org.opencontainers.image.revision") }, false},
	} {
		c := configFile(testMeta, Platform{"linux", "amd64"})
		tc.change(&c.Config)
		if err := CheckConfig(c); (err == nil) != tc.ok {
			t.Errorf("%s: CheckConfig = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

func TestSBOM(t *testing.T) {
	info := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/turnpike-dev/turnpike", Version: "(devel)"},
		Deps: []*debug.Module{
			{Path: "github.com/pion/turn/v5", Version: "v5.1.2", Sum: "h1:turn="},
			{Path: "example.com/old", Version: "v1.0.0", Replace: &debug.Module{Path: "example.com/fork", Version: "v1.0.1+incompatible", Sum: "h1:fork="}},
		},
	}
	doc := sbom(info, testMeta, Platform{"linux", "amd64"}, "abcd")
	type pkg struct{ name, version, purl, comment string }
	var got []pkg
	ids := map[string]bool{}
	for _, p := range doc.Packages {
		got = append(got, pkg{p.Name, p.VersionInfo, p.ExternalRefs[0].ReferenceLocator, p.Comment})
		if ids[p.SPDXID] || strings.Trim(p.SPDXID, "SPDXRef-abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.") != "" {
			t.Errorf("SPDXID %q is repeated or has characters SPDX refuses", p.SPDXID)
		}
		ids[p.SPDXID] = true
	}
	want := []pkg{
		{"github.com/turnpike-dev/turnpike", "v9.9.9", "pkg:golang/github.com/turnpike-dev/turnpike@v9.9.9", "the linux/amd64 binary /turnpike, revision 0123abc"},
		{"stdlib", "go1.26.8", "pkg:golang/stdlib@go1.26.8", ""},
		{"github.com/pion/turn/v5", "v5.1.2", "pkg:golang/github.com/pion/turn/v5@v5.1.2", "go.sum h1:turn="},
		{"example.com/fork", "v1.0.1+incompatible", "pkg:golang/example.com/fork@v1.0.1+incompatible", "replaces example.com/old v1.0.0; go.sum h1:fork="},
	}
	if !slices.Equal(got, want) {
		t.Errorf("packages:\n got %q\nwant %q", got, want)
	}
	if len(doc.Relationships) != len(doc.Packages) || doc.Relationships[0].Type != "DESCRIBES" {
		t.Errorf("relationships %+v: want the document describing the binary, and the binary depending on each module", doc.Relationships)
	}
	if doc.Packages[0].Checksums[0].ChecksumValue != "abcd" || !strings.HasSuffix(doc.DocumentNamespace, "/linux-amd64/abcd") {
		t.Errorf("binary checksum %v, namespace %s: want the binary's SHA-256 in both", doc.Packages[0].Checksums, doc.DocumentNamespace)
	}
}

func TestCommand(t *testing.T) {
	host := Platform{runtime.GOOS, runtime.GOARCH}
	cmd, err := Command(host, "/x/turnpike", "version")
	if err != nil || cmd.Path != "/x/turnpike" || !slices.Equal(cmd.Args, []string{"/x/turnpike", "version"}) {
		t.Errorf("on this machine's platform: %v, %v; want /x/turnpike run directly", cmd, err)
	}
	for _, p := range []Platform{{"windows", runtime.GOARCH}, {"linux", "riscv64"}} {
		if p == host {
			continue
		}
		if _, err := Command(p, "/x/turnpike"); err == nil {
			t.Errorf("Command(%s) on %s: no error, want one (no qemu-user mapping)", p, host)
		}
	}
}
