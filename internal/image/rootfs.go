package image

import (
	"archive/tar"
	"bytes"
	"encoding/pem"
	"iter"
	"path"
	"time"

	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// UID and GID the image runs as: the chart, kustomize's manager.yaml and
// the relay DaemonSet all set runAsUser 65532 (distroless's "nonroot").
const (
	UID = 65532
	GID = 65532
)

// User is the image config's User: numeric, so the kubelet can check
// runAsNonRoot without reading /etc/passwd.
const User = "65532:65532"

// Entrypoint is the image config's entrypoint: the chart and the operator's
// relay DaemonSet give only args (operator, relay ...).
var Entrypoint = []string{"/turnpike"}

// entry is one file or directory of a layer.
type entry struct {
	path     string // absolute, as in the image: /etc/passwd
	dir      bool
	mode     int64
	uid, gid int
	data     []byte
}

// baseEntries is the image's base, in place of a pulled distroless image:
// the user database naming UID 65532, a CA bundle for `turnpike probe`'s
// TLS and DTLS checks, a home for the user and a writable /tmp. Nothing else:
// the binary is static, so no libc, no shell.
func baseEntries(caPEM []byte) []entry {
	return []entry{
		{path: "/etc", dir: true, mode: 0o755},
		{path: "/etc/group", mode: 0o644, data: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{path: "/etc/passwd", mode: 0o644, data: []byte(
			"root:x:0:0:root:/root:/sbin/nologin\n" +
				"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{path: "/etc/ssl", dir: true, mode: 0o755},
		{path: "/etc/ssl/certs", dir: true, mode: 0o755},
		{path: "/etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: caPEM},
		{path: "/home", dir: true, mode: 0o755},
		{path: "/home/nonroot", dir: true, mode: 0o700, uid: UID, gid: GID},
		{path: "/tmp", dir: true, mode: 0o1777},
	}
}

// binaryEntries is the layer of one architecture: the turnpike binary,
// owned by root so the running user cannot replace it.
func binaryEntries(binary []byte) []entry {
	return []entry{{path: Entrypoint[0], mode: 0o755, data: binary}}
}

// tarEntries writes entries as a tar stream in the given order, every one
// with the same mtime and no user or group names, so the same entries give
// the same bytes on every machine.
func tarEntries(entries []entry, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name:    path.Clean(e.path)[1:], // layers hold relative names: etc/passwd
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.gid,
			ModTime: mtime,
			Format:  tar.FormatPAX,
		}
		if e.dir {
			h.Typeflag = tar.TypeDir
			h.Name += "/"
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// caBundlePEM is the CA file Go's crypto/x509 reads on Linux, made from the
// Mozilla (NSS) roots that golang.org/x/crypto/x509roots/fallback/bundle
// carries: pinned by go.sum, so a machine with only Go builds the same file.
// Roots with a distrust-after date are left out: a PEM file cannot carry
// that constraint, and trusting them without it would trust more than NSS does.
func caBundlePEM(roots iter.Seq[bundle.Root]) []byte {
	var buf bytes.Buffer
	for r := range roots {
		if r.Constraint != nil {
			continue
		}
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: r.Certificate})
	}
	return buf.Bytes()
}
