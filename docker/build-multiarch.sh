#!/bin/bash
# Builds the multi-arch broker image with docker buildx, for machines without
# a Rust toolchain; `cargo xtask docker` does the same and also checks the
# platforms against targets/*.toml.
#
#   docker/build-multiarch.sh [--platforms linux/amd64,linux/arm64,linux/arm/v7] [--tag broker:dev] [--push]
#
# Without --push: --load for one platform, else an OCI archive in
# target/docker/broker-image.oci.tar (the classic image store cannot hold a
# multi-platform image).
set -euo pipefail

platforms="linux/amd64,linux/arm64,linux/arm/v7"
tag="broker:dev"
push=false
while [[ $# -gt 0 ]]; do
    case "$1" in
        --platforms) platforms="${2:?--platforms needs a value}"; shift 2 ;;
        --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
        --push) push=true; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "build-multiarch.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

IFS=, read -r -a list <<< "$platforms"
for p in "${list[@]}"; do
    case "$p" in
        linux/amd64|linux/arm64|linux/arm/v7) ;;
        *) echo "build-multiarch.sh: unknown platform '$p'; known: linux/amd64, linux/arm64, linux/arm/v7" >&2; exit 2 ;;
    esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
if ! command -v docker >/dev/null 2>&1; then
    missing+=("the docker client")
else
    docker buildx version >/dev/null 2>&1 || missing+=("docker buildx")
    docker info >/dev/null 2>&1 || missing+=("a running container engine (docker info failed)")
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    joined="$(printf '%s; ' "${missing[@]}")"
    echo "build-multiarch.sh: cannot build here; needs docker buildx and a running container engine; missing: ${joined%; }" >&2
    exit 1
fi

output=(--output "type=oci,dest=target/docker/broker-image.oci.tar")
if [[ "$push" == true ]]; then
    output=(--push)
elif [[ ${#list[@]} -eq 1 ]]; then
    output=(--load)
else
    mkdir -p target/docker
fi
set -x
docker buildx build --platform "$platforms" --file docker/Dockerfile --tag "$tag" "${output[@]}" .
