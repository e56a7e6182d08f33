# syntax=docker/dockerfile:1
# campaign-connector image: built with the official Rust image (Debian bookworm), run on
# debian:bookworm-slim as a non-root user. Used by docker-compose.yml (see docs/docker.md).
#
#   docker build -t campaign-connector .
#   docker run --rm campaign-connector --help
#
# The default command runs the connector with /etc/connector/connector.yaml, which in the
# image sets nothing (every key has its default); mount your own file over it or set
# CONNECTOR_* variables (README, "Configuration").

ARG RUST_VERSION=1.95

# ---- build ----------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build

# The same system packages as scripts/setup.sh: cmake and a C toolchain for the bundled
# librdkafka, and the OpenSSL and curl headers it builds against.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake libcurl4-openssl-dev libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml declares the benches: cargo needs their files to read the manifest.
COPY benches ./benches

# Registry and target dir are BuildKit cache mounts (rebuilds only recompile what
# changed); the binary is copied out of the cache mount in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin campaign-connector \
 && install -m 0755 target/release/campaign-connector /usr/local/bin/campaign-connector

# ---- runtime --------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libcurl4 libssl3 \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 connector \
 && useradd --system --uid 10001 --gid connector --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin connector

COPY --from=build /usr/local/bin/campaign-connector /usr/local/bin/campaign-connector
COPY deploy/docker/connector.yaml /etc/connector/connector.yaml

LABEL org.opencontainers.image.title="campaign-connector" \
      org.opencontainers.image.description="Sends follow-on campaign messages: a Kafka consumer group with changelog-backed per-user timers." \
      org.opencontainers.image.licenses="Apache-2.0"

USER 10001:10001
# Prometheus metrics (/metrics) when CONNECTOR_HTTP_LISTEN=0.0.0.0:9464 is set.
EXPOSE 9464
# SIGTERM: stop fetching, commit, leave the group, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["campaign-connector"]
CMD ["run", "--config", "/etc/connector/connector.yaml"]
