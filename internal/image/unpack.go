package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
