# syntax=docker/dockerfile:1
# ringway's container image: a Rust builder stage, then a slim Debian
# runtime with the binary, CA roots and a default configuration.
#
#   docker build -t ringway .
#   docker run --rm -p 8080:8080 \
#     --security-opt seccomp=deploy/seccomp-io-uring.json \
#     --ulimit memlock=-1:-1 \
#     -v "$PWD/ringway.toml:/etc/ringway/ringway.toml:ro" ringway
#
# Docker's default seccomp profile refuses io_uring (since Docker 25), hence
# the profile; io_uring rings lock memory against RLIMIT_MEMLOCK for a
# non-root user, hence --ulimit memlock (README, "Deploy").

ARG RUST_VERSION=1
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# The registry and target folders are BuildKit cache mounts: a rebuild after
# a source change recompiles ringway's crates, not its dependencies. The
# binary is copied out in the same step, as the cache is not in the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ringway \
    && install -D -m 0755 target/release/ringway /out/ringway

FROM debian:bookworm-slim
# ca-certificates: upstream TLS without `ca` verifies against the system
# roots. Unpinned on purpose: the slim base's security updates should apply.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ringway \
    && useradd --system --uid 10001 --gid ringway --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin ringway
COPY --from=builder /out/ringway /usr/local/bin/ringway
COPY deploy/docker/ringway.toml /etc/ringway/ringway.toml
USER 10001:10001
# 8080: the [[listener]] "edge"; 9901: [admin] (metrics, health, reload).
EXPOSE 8080 9901
# `ringway health` GETs /healthz from the admin listener: no curl needed.
# A configuration with another [admin] listen needs --health-cmd to match.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["ringway", "health", "--admin", "127.0.0.1:9901"]
# SIGTERM drains (in-flight requests finish, up to [runtime] drain_timeout);
# give `docker stop -t` more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["ringway"]
CMD ["--config", "/etc/ringway/ringway.toml"]
