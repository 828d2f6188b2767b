package image

import (
	"fmt"
	"net/url"
	"runtime/debug"
	"strings"
	"time"
)

// The SBOM is SPDX 2.3 JSON, one document per platform, made from the Go
// build information in the binary (what `go version -m` prints): the main
// module, every module linked in with its version and go.sum hash, and the
// Go standard library. Only the fields used are declared.

type spdxDocument struct {
	SPDXVersion       string             `json:"spdxVersion"`
	DataLicense       string             `json:"dataLicense"`
	SPDXID            string             `json:"SPDXID"`
	Name              string             `json:"name"`
	DocumentNamespace string             `json:"documentNamespace"`
	CreationInfo      spdxCreationInfo   `json:"creationInfo"`
	Packages          []spdxPackage      `json:"packages"`
	Relationships     []spdxRelationship `json:"relationships"`
}

type spdxCreationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

type spdxPackage struct {
	Name             string            `json:"name"`
	SPDXID           string            `json:"SPDXID"`
	VersionInfo      string            `json:"versionInfo"`
	DownloadLocation string            `json:"downloadLocation"`
	FilesAnalyzed    bool              `json:"filesAnalyzed"`
	Checksums        []spdxChecksum    `json:"checksums,omitempty"`
	ExternalRefs     []spdxExternalRef `json:"externalRefs,omitempty"`
	Comment          string            `json:"comment,omitempty"`
}

type spdxChecksum struct {
	Algorithm     string `json:"algorithm"`
	ChecksumValue string `json:"checksumValue"`
}

type spdxExternalRef struct {
	ReferenceCategory string `json:"referenceCategory"`
	ReferenceType     string `json:"referenceType"`
	ReferenceLocator  string `json:"referenceLocator"`
}

type spdxRelationship struct {
	Element string `json:"spdxElementId"`
	Type    string `json:"relationshipType"`
	Related string `json:"relatedSpdxElement"`
}

// sbom describes the turnpike binary of one platform. binarySHA256 (hex)
// makes the document's namespace unique per binary, as SPDX asks, while
// the same binary always gets the same document.
func sbom(info *debug.BuildInfo, m Meta, p Platform, binarySHA256 string) spdxDocument {
	root := spdxPackage{
		Name:             info.Main.Path,
		SPDXID:           "SPDXRef-Package-turnpike",
		VersionInfo:      m.Version,
		DownloadLocation: downloadLocation(m.Source),
		Checksums:        []spdxChecksum{{Algorithm: "SHA256", ChecksumValue: binarySHA256}},
		ExternalRefs:     []spdxExternalRef{purl(info.Main.Path, m.Version)},
		Comment:          fmt.Sprintf("the %s binary /turnpike, revision %s", p, m.Revision),
	}
	doc := spdxDocument{
		SPDXVersion:       "SPDX-2.3",
		DataLicense:       "CC0-1.0",
		SPDXID:            "SPDXRef-DOCUMENT",
		Name:              fmt.Sprintf("turnpike %s %s", m.Version, p),
		DocumentNamespace: fmt.Sprintf("%s/spdx/%s/%s-%s/%s", strings.TrimSuffix(m.Source, "/"), url.PathEscape(m.Version), p.OS, p.Arch, binarySHA256),
		CreationInfo: spdxCreationInfo{
			Created:  m.Created.UTC().Format(time.RFC3339),
			Creators: []string{"Tool: turnpike-hack-image", "Organization: turnpike"},
		},
		Packages:      []spdxPackage{root},
		Relationships: []spdxRelationship{{"SPDXRef-DOCUMENT", "DESCRIBES", root.SPDXID}},
	}
	stdlib := spdxPackage{
		Name:             "stdlib",
		SPDXID:           "SPDXRef-Package-stdlib",
		VersionInfo:      info.GoVersion,
		DownloadLocation: "https://go.dev/dl/",
		ExternalRefs:     []spdxExternalRef{purl("stdlib", info.GoVersion)},
	}
	deps := []spdxPackage{stdlib}
	for i, d := range info.Deps {
		deps = append(deps, modulePackage(i, d))
	}
	for _, d := range deps {
		doc.Packages = append(doc.Packages, d)
		doc.Relationships = append(doc.Relationships, spdxRelationship{root.SPDXID, "DEPENDS_ON", d.SPDXID})
	}
	return doc
}

// modulePackage is one module of the build; a replaced module is described
// by what replaced it, since that is the code linked in.
func modulePackage(i int, d *debug.Module) spdxPackage {
	comment := ""
	if d.Replace != nil {
		comment = fmt.Sprintf("replaces %s %s; ", d.Path, d.Version)
		d = d.Replace
	}
	if d.Sum != "" {
		comment += "go.sum " + d.Sum
	}
	return spdxPackage{
		Name:             d.Path,
		SPDXID:           fmt.Sprintf("SPDXRef-Package-%d-%s", i, spdxIDChars(d.Path)),
		VersionInfo:      d.Version,
		DownloadLocation: "NOASSERTION",
		ExternalRefs:     []spdxExternalRef{purl(d.Path, d.Version)},
		Comment:          strings.TrimSuffix(comment, "; "),
	}
}

// purl is the package URL of a Go module (pkg:golang/path@version).
func purl(path, version string) spdxExternalRef {
	return spdxExternalRef{
		ReferenceCategory: "PACKAGE-MANAGER",
		ReferenceType:     "purl",
		ReferenceLocator:  "pkg:golang/" + path + "@" + url.PathEscape(version),
	}
}

// spdxIDChars keeps what an SPDX identifier may hold (letters, digits, '.'
// and '-') and turns everything else into '-'.
func spdxIDChars(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '.' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, s)
}

// downloadLocation is the source URL for SPDX, which wants a VCS locator.
func downloadLocation(source string) string {
	if source == "" {
		return "NOASSERTION"
	}
	return "git+" + source
}
