# One image for the operator and the relay: a static turnpike binary on a
# distroless base, running as an unprivileged user.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/turnpike .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/turnpike /turnpike
USER 65532:65532
ENTRYPOINT ["/turnpike"]
