#!/usr/bin/env bash
# Builds the newswatch image with podman or docker (`make image`, `make image VARIANT=cuda`).
#
#   tools/image.sh engine        print the container engine that works here (podman or docker)
#   tools/image.sh base          make sure PYTHON_IMAGE exists: pull python:3.11-slim-bookworm,
#                                or, when no registry answers, make a Debian base with mmdebstrap
#   tools/image.sh wheelhouse    wheels of newswatch's dependencies in wheelhouse/ (air-gapped builds)
#   tools/image.sh build         all of the above, then build the image from the Dockerfile
#
# Environment: ENGINE (podman|docker), IMAGE (default localhost/newswatch), TAG (default the
# project version, "-cuda" added for VARIANT=cuda), VARIANT (cpu|cuda), PYTHON_IMAGE,
# PIP_OFFLINE (0|1; default 1 when the base was made here), PYTHON (for pip on the host).
# Figures (build seconds, image bytes) go to build/image/<variant>.json.
set -euo pipefail
cd "$(dirname "$0")/.."

VARIANT=${VARIANT:-cpu}
IMAGE=${IMAGE:-localhost/newswatch}
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)
TAG=${TAG:-$VERSION$([ "$VARIANT" = cuda ] && echo -cuda || true)}
PYTHON=${PYTHON:-.venv/bin/python}
UPSTREAM_BASE=docker.io/library/python:3.11-slim-bookworm
LOCAL_BASE=localhost/debian-python:bookworm
OUT=build/image
mkdir -p "$OUT"

log() { printf 'image: %s\n' "$*" >&2; }

engine() {
  if [ -n "${ENGINE:-}" ]; then echo "$ENGINE"; return; fi
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then echo docker; return; fi
  if command -v podman >/dev/null 2>&1; then echo podman; return; fi
  echo "image: no container engine: install podman (.ci/image-deps) or start a docker daemon" >&2
  return 1
}

ENGINE=$(engine)
if [ "$ENGINE" = podman ] && [ -z "${CONTAINERS_CONF:-}" ] && command -v runc >/dev/null 2>&1; then
  # runc and cgroupfs: podman's default crun refuses hosts with hybrid cgroups
  export CONTAINERS_CONF=$PWD/.ci/containers.conf
fi

have_image() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }

# A Debian bookworm base with python3, python3-venv and `python`, from Debian packages only.
make_local_base() {
  command -v mmdebstrap >/dev/null 2>&1 || { log "mmdebstrap missing: run .ci/image-deps"; return 1; }
  local tar=$OUT/debian-python-bookworm.tar
  log "no registry answers: making $LOCAL_BASE with mmdebstrap"
  mmdebstrap --quiet --variant=minbase \
    --include=python3,python3-venv,python-is-python3,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$tar"
  "$ENGINE" import "$tar" "$LOCAL_BASE" >/dev/null
  rm -f "$tar"
}

# Prints the base image to build on.
base() {
  if [ -n "${PYTHON_IMAGE:-}" ]; then
    have_image "$PYTHON_IMAGE" || "$ENGINE" pull "$PYTHON_IMAGE" >&2
    echo "$PYTHON_IMAGE"
    return
  fi
  if have_image "$UPSTREAM_BASE" || timeout 300 "$ENGINE" pull -q "$UPSTREAM_BASE" >/dev/null 2>&1; then
    echo "$UPSTREAM_BASE"
    return
  fi
  have_image "$LOCAL_BASE" || make_local_base
  echo "$LOCAL_BASE"
}

wheelhouse() {
  local pip=("$PYTHON" -m pip --disable-pip-version-check -q)
  log "wheels into wheelhouse/ ($VARIANT)"
  "${pip[@]}" wheel '.[trial]' -w wheelhouse
  rm -f wheelhouse/newswatch-*.whl # the build installs newswatch from the source tree
  "${pip[@]}" download -d wheelhouse pip 'setuptools>=69' wheel
  if [ "$VARIANT" = cuda ]; then
    "${pip[@]}" download -d wheelhouse 'onnxruntime-gpu[cuda,cudnn]>=1.19'
  fi
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }
seconds() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

build() {
  local from offline t0 base_ms wheels_ms started ms bytes
  t0=$(now_ms)
  from=$(base)
  base_ms=$(($(now_ms) - t0))
  offline=${PIP_OFFLINE:-$([ "$from" = "$LOCAL_BASE" ] && echo 1 || echo 0)}
  t0=$(now_ms)
  if [ "$offline" = 1 ]; then wheelhouse; fi
  wheels_ms=$(($(now_ms) - t0))
  log "building $IMAGE:$TAG with $ENGINE on $from (VARIANT=$VARIANT PIP_OFFLINE=$offline)"
  started=$(now_ms)
  local format=()
  [ "$ENGINE" = podman ] && format=(--format docker) # OCI images drop HEALTHCHECK
  "$ENGINE" build "${format[@]}" --build-arg "PYTHON_IMAGE=$from" --build-arg "VARIANT=$VARIANT" \
    --build-arg "PIP_OFFLINE=$offline" -t "$IMAGE:$TAG" .
  ms=$(($(now_ms) - started))
  bytes=$("$ENGINE" image inspect -f '{{.Size}}' "$IMAGE:$TAG")
  printf '{"image": "%s:%s", "engine": "%s", "base": "%s", "variant": "%s", "offline": %s, "base_s": %s, "wheelhouse_s": %s, "build_s": %s, "size_bytes": %s}\n' \
    "$IMAGE" "$TAG" "$ENGINE" "$from" "$VARIANT" "$offline" "$(seconds $base_ms)" "$(seconds $wheels_ms)" \
    "$(seconds "$ms")" "$bytes" | tee "$OUT/$VARIANT.json"
}

case "${1:-build}" in
  engine) echo "$ENGINE" ;;
  base) base ;;
  wheelhouse) wheelhouse ;;
  build) build ;;
  *) echo "usage: $0 [engine|base|wheelhouse|build]" >&2; exit 2 ;;
esac
