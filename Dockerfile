# One image for the operator and the relay: a static turnpike binary on a
# distroless base, running as an unprivileged user. `make image` builds the
# same image without Docker (hack/image); this file is for those who use
# Docker: docker build --platform linux/arm64 . (or make docker-build).
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS=linux
ARG TARGETARCH=amd64
# Cross-compiled on the build machine's platform, as make image does.
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -buildvcs=false \
    -ldflags "-s -w -X main.version=${VERSION}" -o /out/turnpike .

# distroless's static nonroot: /etc/passwd with UID 65532, CA certificates, /tmp.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title=turnpike \
      org.opencontainers.image.source=https://github.com/turnpike-dev/turnpike \
      org.opencontainers.image.revision=$REVISION \
      org.opencontainers.image.version=$VERSION
COPY --from=build /out/turnpike /turnpike
USER 65532:65532
ENTRYPOINT ["/turnpike"]
