// Package image builds turnpike's OCI image without a Docker engine: a
// static binary per platform on a base made here (user database, CA bundle),
// an image index for all platforms, and an SPDX SBOM per platform. The same
// sources and Meta give the same digests on every machine. It also unpacks
// the image's filesystem, so tests run what ships.
package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// Options of a build.
type Options struct {
	Meta      Meta
	Platforms []Platform
	// SourceDir is the main module's directory (the repository root).
	SourceDir string
	// Go is the go command; empty means "go" from PATH.
	Go string
	// Out receives the image as an OCI layout in Out/oci and the SBOMs as
	// Out/sbom/<os>-<arch>.spdx.json. Both are replaced.
	Out string
}

// LayoutDir is where Build writes the OCI layout under Options.Out.
func LayoutDir(out string) string { return filepath.Join(out, "oci") }

// SBOMPath is where Build writes the SBOM of one platform under Options.Out.
func SBOMPath(out string, p Platform) string {
	return filepath.Join(out, "sbom", p.OS+"-"+p.Arch+".spdx.json")
}

// Build compiles turnpike for every platform and writes the image index and
// the SBOMs. It returns the index, whose digest names the whole build.
func Build(ctx context.Context, o Options) (v1.ImageIndex, error) {
	if len(o.Platforms) == 0 {
		return nil, fmt.Errorf("no platforms to build")
	}
	work, err := os.MkdirTemp("", "turnpike-image-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	base, err := layer(baseEntries(caBundlePEM(bundle.Roots())), o.Meta)
	if err != nil {
		return nil, err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	idx = mutate.Annotations(idx, o.Meta.Labels()).(v1.ImageIndex)
	sboms := map[Platform][]byte{}
	for _, p := range o.Platforms {
		bin := filepath.Join(work, p.OS+"-"+p.Arch, "turnpike")
		if err := compile(ctx, o, p, bin); err != nil {
			return nil, err
		}
		img, sbomJSON, err := platformImage(o.Meta, p, base, bin)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		sboms[p] = sbomJSON
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: p.OS, Architecture: p.Arch}},
		})
	}
	if err := writeOutput(o.Out, idx, sboms); err != nil {
		return nil, err
	}
	return idx, nil
}

// compile builds a static, stripped binary with no paths or VCS stamps of
// the machine that built it, so it is the same everywhere.
func compile(ctx context.Context, o Options, p Platform, out string) error {
	goCmd := o.Go
	if goCmd == "" {
		goCmd = "go"
	}
	cmd := exec.CommandContext(ctx, goCmd, "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -X main.version="+o.Meta.Version, "-o", out, ".")
	cmd.Dir = o.SourceDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Arch)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build for %s: %w\n%s", p, err, msg)
	}
	return nil
}

// platformImage is the image of one platform (the shared base layer and the
// binary's layer) and the binary's SBOM.
func platformImage(m Meta, p Platform, base v1.Layer, bin string) (v1.Image, []byte, error) {
	binary, err := os.ReadFile(bin)
	if err != nil {
		return nil, nil, err
	}
	info, err := buildinfo.Read(bytes.NewReader(binary))
	if err != nil {
		return nil, nil, fmt.Errorf("build info of %s: %w", bin, err)
	}
	sum := sha256.Sum256(binary)
	sbomJSON, err := json.MarshalIndent(sbom(info, m, p, hex.EncodeToString(sum[:])), "", "  ")
	if err != nil {
		return nil, nil, err
	}
	top, err := layer(binaryEntries(binary), m)
	if err != nil {
		return nil, nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, configFile(m, p))
	if err != nil {
		return nil, nil, err
	}
	created := v1.Time{Time: m.Created}
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, MediaType: types.OCILayer, History: v1.History{Created: created, CreatedBy: "turnpike base: /etc/passwd, /etc/group, CA bundle, /tmp"}},
		mutate.Addendum{Layer: top, MediaType: types.OCILayer, History: v1.History{Created: created, CreatedBy: "turnpike binary: /turnpike"}},
	)
	if err != nil {
		return nil, nil, err
	}
	return mutate.Annotations(img, m.Labels()).(v1.Image), sbomJSON, nil
}

// layer is a gzip-compressed OCI layer of entries, all with the source's time.
func layer(entries []entry, m Meta) (v1.Layer, error) {
	data, err := tarEntries(entries, m.Created)
	if err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// writeOutput replaces out/oci and out/sbom: it writes them beside the old
// ones first, so a failed build leaves the last good output in place.
func writeOutput(out string, idx v1.ImageIndex, sboms map[Platform][]byte) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(out, ".new-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if _, err := layout.Write(LayoutDir(tmp), idx); err != nil {
		return fmt.Errorf("writing the OCI layout: %w", err)
	}
	for p, data := range sboms {
		path := SBOMPath(tmp, p)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	for _, name := range []string{"oci", "sbom"} {
		if err := os.RemoveAll(filepath.Join(out, name)); err != nil {
			return err
		}
		if err := os.Rename(filepath.Join(tmp, name), filepath.Join(out, name)); err != nil {
			return err
		}
	}
	return nil
}
