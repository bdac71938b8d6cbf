# syntax=docker/dockerfile:1
#
# siphon's container image: the release binary on Debian slim, run as a
# non-root user with nothing to write (offsets live in Kafka).
#
#   docker build -t siphon:0.1.0 .
#
# Needs BuildKit (the default builder of current Docker) for the cache mounts.

# Edition 2024 needs Rust >= 1.85; pinned to the toolchain the project's
# machines build and test with.
ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-bookworm AS builder
# rdkafka builds its bundled librdkafka with ./configure and make (no cmake:
# the crate's cmake-build feature is off), against the system OpenSSL
# (feature "ssl") and zlib; zstd-sys compiles zstd from source. reqwest's
# native-tls links the same OpenSSL. The image already has gcc and make.
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config libssl-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY schemas ./schemas
COPY src ./src
# A workspace member (the reference consumers): cargo reads its manifest
# even though only the siphon binary is built.
COPY consumers ./consumers
# The registry and target caches persist between builds on the same builder,
# so a source change recompiles siphon, not librdkafka and every dependency.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin siphon \
    && install -D -m 0755 target/release/siphon /out/siphon

FROM debian:bookworm-slim
# Set both when building a release: --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD)
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="siphon" \
      org.opencontainers.image.description="PostgreSQL change data capture to Kafka (Avro), exactly once" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
# Runtime libraries only: TLS roots, OpenSSL 3 and zlib (librdkafka, reqwest).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/siphon /usr/local/bin/siphon
# A fixed numeric user, so Kubernetes can verify runAsNonRoot; the Helm chart
# runs the pod with the same ids.
USER 10001:10001
EXPOSE 9090
ENV SIPHON_LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/siphon"]
CMD ["run", "/etc/siphon/connectors"]
