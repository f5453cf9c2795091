# syntax=docker/dockerfile:1
#
# Container image for oauth-metadata-gateway.
#
#   docker build -t oauth-metadata-gateway:0.1.0 .
#   docker run --rm -p 8080:8080 \
#     -e GATEWAY_UPSTREAM=https://auth.example.com oauth-metadata-gateway:0.1.0
#
# To keep validated documents across container restarts during an upstream
# outage (docs/operations.md, "State directory"), add
#     -v oauth-metadata-gateway-state:/var/lib/oauth-metadata-gateway \
#     -e GATEWAY_STATE_DIR=/var/lib/oauth-metadata-gateway
# A new named volume takes the image directory's owner (the runtime user).
#
# Pin the toolchain with --build-arg RUST_VERSION=1.95 (default: latest 1.x).
# The builder is Debian bookworm so the binary links against the same glibc
# as the distroless cc-debian12 runtime image.

ARG RUST_VERSION=1

# ---------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS builder
# bash (always in Debian images) so a failing command in a pipe fails the RUN.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /build

# 1. Dependencies only, in their own layer: rebuilt when Cargo.toml or
#    Cargo.lock change, not on every source edit. stub-targets.sh writes a
#    dummy src/main.rs, src/lib.rs and a placeholder for every target that
#    Cargo.toml declares (e.g. [[bench]] entries), so the manifest loads
#    without the real sources. (If a build.rs is ever added, COPY it here.)
COPY Cargo.toml Cargo.lock ./
COPY deploy/docker/stub-targets.sh /usr/local/bin/stub-targets.sh
RUN sh /usr/local/bin/stub-targets.sh Cargo.toml \
    && cargo build --release --locked \
    && rm -rf src

# 2. The real sources. Cargo decides freshness of local crates by file mtime,
#    and COPY keeps the build context's (possibly older) mtimes, so drop the
#    dummy build's fingerprints and touch the sources to force a rebuild of
#    this crate. The --version check fails the build if the dummy binary
#    survived.
COPY src ./src
RUN rm -rf target/release/.fingerprint/oauth-metadata-gateway-* \
    && find src -type f -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --bin oauth-metadata-gateway \
    && ./target/release/oauth-metadata-gateway --version | grep '^oauth-metadata-gateway ' \
    && install -m 0755 target/release/oauth-metadata-gateway /usr/local/bin/oauth-metadata-gateway \
    && install -d -m 0700 -o 65532 -g 65532 /out/state

# ---------------------------------------------------------------------------
# Runtime: glibc + libgcc only, no shell, no package manager. TLS roots are
# compiled into the binary (webpki-roots); extra CAs come from --upstream-ca.
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="oauth-metadata-gateway" \
      org.opencontainers.image.description="Caching gateway for OAuth authorization-server metadata (RFC 8414) in front of MCP servers" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"

COPY --from=builder /usr/local/bin/oauth-metadata-gateway /usr/local/bin/oauth-metadata-gateway
# The state directory (GATEWAY_STATE_DIR, opt-in), owned by the runtime user
# (distroless has no shell to mkdir/chown in this stage). Kubernetes mounts a
# volume over it, which makes it writable under readOnlyRootFilesystem.
COPY --from=builder --chown=65532:65532 /out/state /var/lib/oauth-metadata-gateway

# Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd
# (65532 is distroless' "nonroot" user).
USER 65532:65532

# Inside a container the gateway must listen on all interfaces; the binary's
# own default is 127.0.0.1:8080.
ENV GATEWAY_LISTEN=0.0.0.0:8080
EXPOSE 8080

# SIGTERM starts a graceful shutdown bounded by --shutdown-timeout (10s by
# default): give `docker stop` more than that (docker stop -t 15).
STOPSIGNAL SIGTERM

# No HEALTHCHECK: the distroless image has no shell, curl or wget to run one,
# and the binary has no self-probe mode. Orchestrators probe over HTTP
# instead: GET /healthz (liveness) and GET /readyz (200 only when a servable
# document is cached), as deploy/kubernetes/deployment.yaml does.
ENTRYPOINT ["/usr/local/bin/oauth-metadata-gateway"]
