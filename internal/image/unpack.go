package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// FromLayout reads the image of one platform from an OCI layout Build wrote.
func FromLayout(dir string, p Platform) (v1.Image, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range m.Manifests {
		if d.Platform != nil && d.Platform.OS == p.OS && d.Platform.Architecture == p.Arch {
			return idx.Image(d.Digest)
		}
	}
	return nil, fmt.Errorf("%s: no image for %s", dir, p)
}

// Unpack writes the image's filesystem (all layers, flattened) into dest
// and returns its config. Only directories and regular files are written,
// with their modes; ownership stays the caller's, so no root is needed.
func Unpack(img v1.Image, dest string) (*v1.ConfigFile, error) {
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return cfg, nil
		}
		if err != nil {
			return nil, err
		}
		if err := unpackEntry(tr, h, dest); err != nil {
			return nil, err
		}
	}
}

func unpackEntry(r io.Reader, h *tar.Header, dest string) error {
	name := filepath.Clean(filepath.FromSlash(h.Name))
	if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, ".."+string(filepath.Separator)) {
		return fmt.Errorf("layer entry %q leaves the filesystem", h.Name)
	}
	path := filepath.Join(dest, name)
	mode := os.FileMode(h.Mode).Perm()
	switch h.Typeflag {
	case tar.TypeDir:
		// The owner keeps write access, or the next entries and the
		// caller's cleanup could not write in /tmp's siblings.
		if err := os.MkdirAll(path, mode|0o700); err != nil {
			return err
		}
		return os.Chmod(path, mode|0o700)
	case tar.TypeReg:
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, r); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	default:
		return nil // the image has no links or devices; skip any a base might add
	}
}

// qemuArch is the name qemu-user gives a Go architecture.
var qemuArch = map[string]string{"amd64": "x86_64", "arm64": "aarch64"}

// Command runs a binary of platform p on this machine: directly on its own
// platform, else under qemu-user (Debian's qemu-user-static), so the other
// architecture's /turnpike can be started too. The error says what is
// missing when neither works.
func Command(p Platform, bin string, args ...string) (*exec.Cmd, error) {
	if p.OS == runtime.GOOS && p.Arch == runtime.GOARCH {
		return exec.Command(bin, args...), nil
	}
	if p.OS != runtime.GOOS || qemuArch[p.Arch] == "" {
		return nil, fmt.Errorf("cannot run a %s binary on %s/%s", p, runtime.GOOS, runtime.GOARCH)
	}
	qemu, err := exec.LookPath("qemu-" + qemuArch[p.Arch] + "-static")
	if err != nil {
		return nil, fmt.Errorf("running a %s binary here needs qemu-user-static: %w", p, err)
	}
	return exec.Command(qemu, append([]string{bin}, args...)...), nil
}
