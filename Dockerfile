# syntax=docker/dockerfile:1
#
# tandem: one static binary in a distroless image (no shell, no package
# manager, CA certificates and tzdata included), running as an unprivileged
# user. Every component is the same image with a different command:
#
#   docker build -t tandem:dev --build-arg VERSION=$(git describe --tags --always) .
#   docker run --rm -v $PWD/tandem.yaml:/etc/tandem/tandem.yaml:ro -p 8080:8080 tandem:dev ingest
#
# The configuration is read from $TANDEM_CONFIG (/etc/tandem/tandem.yaml);
# mount it there (compose: a bind mount, Kubernetes: a ConfigMap). Secrets
# come from the environment through ${ENV} references in that file.
# Container health checks use `tandem probe URL` (there is no curl here).

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first, so source edits do not invalidate the download layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
# CGO_ENABLED=0: a static binary that needs no libc in the final image.
# -trimpath and -s -w keep build paths and debug tables out of it.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=linux go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/tandem ./cmd/tandem

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="tandem" \
      org.opencontainers.image.description="Exact, fresh analytics over event streams (Lambda architecture)" \
      org.opencontainers.image.source="https://github.com/tandem-analytics/tandem"
COPY --from=build /out/tandem /tandem
ENV TANDEM_CONFIG=/etc/tandem/tandem.yaml
# 65532 is distroless's "nonroot". Numeric, so Kubernetes' runAsNonRoot can
# verify it without reading /etc/passwd.
USER 65532:65532
# ingest, serve, speed (metrics only), archive (metrics only)
EXPOSE 8080 8081 8082 8083
ENTRYPOINT ["/tandem"]
CMD ["--help"]
