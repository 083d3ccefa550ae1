# syntax=docker/dockerfile:1
#
# The scale-out load worker: loadgen plus docker/loadgen-worker.sh, which
# runs one workload against a broker and writes its result (with serialized
# HDR histograms) to $OUT_DIR/<worker id>.json for `cargo xtask merge`.
#
# Built for the platform of the machines that generate load (usually
# linux/amd64): `docker build -f docker/loadgen.Dockerfile -t loadgen:dev .`.
# Unlike the broker image it is not cross-compiled: librdkafka (C) would need
# a cross C toolchain and sysroot per platform, and load hosts are rarely
# the small boards the broker targets.

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# librdkafka is built from source by the rdkafka crate (cmake-free: make + cc).
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p loadgen --bin loadgen \
 && install -D -m 0755 target/release/loadgen /out/loadgen

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /work --create-home loadgen \
 && install -d -o 10001 -g 10001 /results
COPY --from=build /out/loadgen /usr/local/bin/loadgen
COPY docker/loadgen-worker.sh /usr/local/bin/loadgen-worker
COPY docker/workloads/ /workloads/
COPY bench/workloads/ /workloads/bench/
USER 10001:10001
WORKDIR /work
ENV WORKLOAD=/workloads/scaleout-mqtt-latency.toml \
    TARGET=broker:1883 \
    OUT_DIR=/results
ENTRYPOINT ["/usr/local/bin/loadgen-worker"]
