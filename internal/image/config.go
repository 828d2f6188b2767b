package image

import (
	"fmt"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Meta says what an image is built from. Every field ends up in the image,
// so two builds with the same Meta and sources give the same digests.
type Meta struct {
	Version  string    // turnpike version: `turnpike version` prints it
	Revision string    // the source's VCS revision (git commit)
	Source   string    // URL of the source repository
	Created  time.Time // the source's time (SOURCE_DATE_EPOCH), not the build's
}

// Labels are the image's OCI labels, repeated as annotations on the
// manifests and the index so registries show them without the config.
func (m Meta) Labels() map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":    "turnpike",
		"org.opencontainers.image.source":   m.Source,
		"org.opencontainers.image.revision": m.Revision,
		"org.opencontainers.image.version":  m.Version,
		"org.opencontainers.image.created":  m.Created.UTC().Format(time.RFC3339),
	}
}

// Platform is an image platform, linux/amd64 or linux/arm64.
type Platform struct{ OS, Arch string }

func (p Platform) String() string { return p.OS + "/" + p.Arch }

// ParsePlatform reads "os/arch".
func ParsePlatform(s string) (Platform, error) {
	os, arch, ok := strings.Cut(s, "/")
	if !ok || os == "" || arch == "" || strings.Contains(arch, "/") {
		return Platform{}, fmt.Errorf("platform %q: want os/arch, like linux/arm64", s)
	}
	return Platform{OS: os, Arch: arch}, nil
}

// configFile is the image config of one platform; mutate.Append adds the
// layers' diff IDs and history to it.
func configFile(m Meta, p Platform) *v1.ConfigFile {
	return &v1.ConfigFile{
		Architecture: p.Arch,
		OS:           p.OS,
		Created:      v1.Time{Time: m.Created},
		Config: v1.Config{
			User:       User,
			Entrypoint: slices.Clone(Entrypoint),
			// The only executable is /turnpike; the kubelet and the
			// runtime expect a PATH all the same.
			Env:        []string{"PATH=/"},
			WorkingDir: "/",
			Labels:     m.Labels(),
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
}

// CheckConfig fails unless an image config runs turnpike the way the chart
// and the relay DaemonSet expect: as UID 65532 with /turnpike as entrypoint
// and only args given, and says where it comes from.
func CheckConfig(c *v1.ConfigFile) error {
	if c.Config.User != User {
		return fmt.Errorf("image user %q, want %q (the chart's runAsUser)", c.Config.User, User)
	}
	if !slices.Equal(c.Config.Entrypoint, Entrypoint) {
		return fmt.Errorf("image entrypoint %q, want %q (the chart gives only args)", c.Config.Entrypoint, Entrypoint)
	}
	if len(c.Config.Cmd) != 0 {
		return fmt.Errorf("image cmd %q: want none, the chart's args replace it anyway", c.Config.Cmd)
	}
	for _, l := range []string{"org.opencontainers.image.source", "org.opencontainers.image.revision", "org.opencontainers.image.version"} {
		if c.Config.Labels[l] == "" {
			return fmt.Errorf("image has no label %s", l)
		}
	}
	return nil
}
