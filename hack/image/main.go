// Command image builds, unpacks and pushes turnpike's OCI image without a
// Docker engine (see internal/image). The Makefile runs it:
//
//	make image                  # bin/image/oci (linux/amd64, linux/arm64) and bin/image/sbom
//	make image-push IMG=registry.example.com/turnpike:v0.1.0
//
// Subcommands:
//
//	build  -out DIR -version V -revision R -source URL -created UNIX -platforms linux/amd64,linux/arm64
//	unpack -layout DIR -platform linux/amd64 -out DIR   (checks user and entrypoint, runs `turnpike version`,
//	                                                     under qemu-user-static for another architecture)
//	push   -layout DIR IMAGE                            (credentials from ~/.docker/config.json)
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/turnpike-dev/turnpike/internal/image"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	commands := map[string]func(context.Context, []string) error{"build": build, "unpack": unpack, "push": push}
	if len(os.Args) < 2 || commands[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: go run ./hack/image build|unpack|push [flags]")
		os.Exit(2)
	}
	if err := commands[os.Args[1]](ctx, os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "image %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func build(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	out := fs.String("out", "bin/image", "output directory: oci/ (OCI layout) and sbom/")
	version := fs.String("version", "dev", "turnpike version (org.opencontainers.image.version, `turnpike version`)")
	revision := fs.String("revision", "unknown", "git commit (org.opencontainers.image.revision)")
	source := fs.String("source", "https://github.com/turnpike-dev/turnpike", "source repository (org.opencontainers.image.source)")
	created := fs.String("created", "0", "the source's time in Unix seconds (SOURCE_DATE_EPOCH): file times and image dates")
	platforms := fs.String("platforms", "linux/amd64,linux/arm64", "comma-separated os/arch list")
	if err := fs.Parse(args); err != nil {
		return err
	}
	epoch, err := strconv.ParseInt(*created, 10, 64)
	if err != nil {
		return fmt.Errorf("-created %q: %w", *created, err)
	}
	var ps []image.Platform
	for _, s := range strings.Split(*platforms, ",") {
		p, err := image.ParsePlatform(strings.TrimSpace(s))
		if err != nil {
			return err
		}
		ps = append(ps, p)
	}
	idx, err := image.Build(ctx, image.Options{
		Meta:      image.Meta{Version: *version, Revision: *revision, Source: *source, Created: time.Unix(epoch, 0).UTC()},
		Platforms: ps,
		SourceDir: ".",
		Out:       *out,
	})
	if err != nil {
		return err
	}
	digest, err := idx.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("image index %s (%s) in %s, SBOMs in %s\n", digest, *platforms, image.LayoutDir(*out), filepath.Dir(image.SBOMPath(*out, ps[0])))
	return nil
}

func unpack(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("unpack", flag.ContinueOnError)
	dir := fs.String("layout", "bin/image/oci", "OCI layout to read")
	platform := fs.String("platform", "linux/amd64", "os/arch of the image to unpack")
	out := fs.String("out", "", "directory to unpack the filesystem into (its files are overwritten)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("-out is required")
	}
	p, err := image.ParsePlatform(*platform)
	if err != nil {
		return err
	}
	img, err := image.FromLayout(*dir, p)
	if err != nil {
		return err
	}
	// Files are overwritten, nothing is removed: -out may name any directory.
	cfg, err := image.Unpack(img, *out)
	if err != nil {
		return err
	}
	if err := image.CheckConfig(cfg); err != nil {
		return err
	}
	bin := filepath.Join(*out, cfg.Config.Entrypoint[0])
	cmd, err := image.Command(p, bin, "version")
	if err != nil {
		return err
	}
	v, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("%s version: %w", bin, err)
	}
	fmt.Printf("unpacked %s into %s: user %s, %s version: %s", p, *out, cfg.Config.User, bin, v)
	return nil
}

func push(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("push", flag.ContinueOnError)
	dir := fs.String("layout", "bin/image/oci", "OCI layout to push")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("want one image reference (registry/repository:tag), got %q", fs.Args())
	}
	digest, err := image.Push(ctx, *dir, fs.Arg(0), remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		return err
	}
	ref, err := name.ParseReference(fs.Arg(0)) // Push parsed it already
	if err != nil {
		return err
	}
	fmt.Printf("pushed %s: %s@%s\n", fs.Arg(0), ref.Context().Name(), digest)
	return nil
}
