# syntax=docker/dockerfile:1.7
# Container images of Sluice: one build, two targets.
#
#   docker build --target gateway -t sluice/sluice-gateway:0.1.0 .
#   docker build --target ingest  -t sluice/sluice-ingest:0.1.0 .
#
# The names and tag are what helm/sluice/values.yaml pulls by default (repository
# sluice/sluice-<service>, tag = the chart's appVersion = the workspace version), so the same
# build serves docker-compose.yml and the chart. Needs BuildKit (the default builder of Docker 23+
# and of Docker Compose v2): cache mounts and the heredoc below.
#
# Checked without Docker by tests/compose/check_compose.py (make test-compose).

# Must equal rust-toolchain.toml's channel, so the build uses the pinned compiler as it is.
ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm
ARG VERSION=0.1.0

# --- builder: both binaries, release profile ---------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
ARG RUST_VERSION
# librdkafka, zstd and OpenSSL (rdkafka's `ssl-vendored`) are compiled from source by their
# -sys crates: a C compiler, make, perl (OpenSSL's Configure), pkg-config and the zlib headers
# (librdkafka links the system zlib). cmake is not needed with these features. Most of this is
# already in the rust image; listing it keeps the build honest if the base changes.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc g++ make perl pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
# The image's toolchain is exactly rust-toolchain.toml's; naming it here stops rustup from
# fetching the file's extra components (rustfmt, clippy), which a build does not need.
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION} \
    CARGO_TERM_COLOR=never
WORKDIR /src
COPY . .
# The registry and target caches survive between builds (BuildKit cache mounts), so a rebuild
# after a source change recompiles Sluice's crates, not librdkafka and OpenSSL. The binaries are
# copied out of the cache-mounted target/ in the same step.
RUN --mount=type=cache,id=sluice-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=sluice-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=sluice-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p sluice-ingest -p sluice-gateway \
 && mkdir -p /out \
 && cp target/release/sluice-ingest target/release/sluice-gateway /out/

# --- runtime: what both images share -----------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG VERSION
# The binaries link only libc, libm, libgcc_s and libz (`ldd`); OpenSSL, librdkafka and zstd are
# static. ca-certificates gives TLS to Kafka a CA store; SSL_CERT_FILE/SSL_CERT_DIR point the
# vendored OpenSSL (whose compiled-in directory is not Debian's) at it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates zlib1g \
 && rm -rf /var/lib/apt/lists/*
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_DIR=/etc/ssl/certs
# The same numeric user as the chart's securityContext (runAsUser 65532), so file ownership
# means the same under Docker and Kubernetes.
RUN groupadd --system --gid 65532 sluice \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin sluice
# Health check for Docker: Kubernetes probes use httpGet and need nothing in the image, but a
# Docker HEALTHCHECK runs inside the container. bash is part of every Debian image, and its
# /dev/tcp is enough for one HTTP request, so no curl or wget (and their libraries) is shipped.
# Usage: sluice-probe PORT [PATH]; exit 0 only on a 200 from http://127.0.0.1:PORT/PATH.
COPY --chmod=0755 <<'EOF' /usr/local/bin/sluice-probe
#!/bin/bash
port=${1:?usage: sluice-probe PORT [PATH]}
path=${2:-/readyz}
exec 3<>"/dev/tcp/127.0.0.1/${port}" || exit 1
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$path" "$port" >&3 || exit 1
IFS=' ' read -r -t 5 _version status _reason <&3 || exit 1
[ "$status" = 200 ]
EOF
USER 65532:65532
# Every service drains on SIGTERM (the gateway closes streams over --drain-window, ingest waits
# for Kafka's acknowledgements), so give it time: see stop_grace_period in docker-compose.yml.
STOPSIGNAL SIGTERM
LABEL org.opencontainers.image.vendor="Sluice" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/sluice/sluice" \
      org.opencontainers.image.url="https://github.com/sluice/sluice" \
      org.opencontainers.image.version="${VERSION}"

# --- sluice-ingest: HTTP → Kafka ---------------------------------------------------------------
FROM runtime AS ingest
COPY --from=builder /out/sluice-ingest /usr/local/bin/sluice-ingest
# --listen (events API) and --admin-listen (/healthz, /readyz, /metrics) defaults.
EXPOSE 8090 9090
LABEL org.opencontainers.image.title="sluice-ingest" \
      org.opencontainers.image.description="Sluice ingest: HTTP → Kafka, a 2xx only after Kafka acknowledged every event."
ENTRYPOINT ["/usr/local/bin/sluice-ingest"]

# --- sluice-gateway: Kafka → SSE (last, so a plain `docker build .` builds it) ------------------
FROM runtime AS gateway
COPY --from=builder /out/sluice-gateway /usr/local/bin/sluice-gateway
# --listen (SSE API) and --admin-listen (/healthz, /readyz, /metrics) defaults.
EXPOSE 8080 9080
LABEL org.opencontainers.image.title="sluice-gateway" \
      org.opencontainers.image.description="Sluice gateway: Kafka → Server-Sent Events, with offset cursors as event ids."
ENTRYPOINT ["/usr/local/bin/sluice-gateway"]
