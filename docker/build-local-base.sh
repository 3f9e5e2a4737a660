#!/bin/sh
# Build the demo's base image from Debian packages, for a machine that reaches no image
# registry, and point the demo's build at this machine's own pip settings.
#
#   docker/build-local-base.sh            # then: docker compose -f docker/compose.yaml up --build
#
# 1. debootstrap a minimal Debian bookworm (python3 3.11, python3-venv, ca-certificates) from
#    the mirror apt uses here, and `docker import` it as smpc-base:bookworm (about 2 minutes;
#    skipped when that image exists, unless --force).
# 2. docker/local/ca.pem: the CA bundle this machine's pip trusts (`pip config`: cert), for a
#    network whose TLS is inspected by a proxy. docker/local/wheels/: the torch CPU wheel from
#    pip's find-links folder, when there is one (from the registry, torch==2.13.0 is the
#    multi-GB CUDA build).
# 3. docker/.env (read by docker compose / docker-compose from docker/): the build arguments
#    that use all of the above. Delete docker/.env to build from python:3.11-slim again.
#
# Needs root (debootstrap), debootstrap and a running Docker engine.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
IMAGE=${SMPC_BASE_IMAGE:-smpc-base:bookworm}
SUITE=bookworm
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

say() { echo "build-local-base: $*"; }
die() { echo "build-local-base: error: $*" >&2; exit 2; }

command -v docker >/dev/null || die "docker is not installed (Debian: apt-get install docker.io docker-compose)"
docker info >/dev/null 2>&1 || die "the Docker engine is not running (start it: dockerd &, or systemctl start docker)"

# --- 1. the base image ----------------------------------------------------------------------
mirror() {
    # the first Debian archive (not -security) that apt uses here; deb.debian.org otherwise
    url=$(grep -hs -E '^[[:space:]]*(URIs:|deb )' /etc/apt/sources.list \
              /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
          | tr ' ' '\n' | grep -E '^(https?|file)://' | grep -E '/debian/?$' | head -n 1)
    echo "${url:-http://deb.debian.org/debian}"
}

if [ "$FORCE" = 0 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "$IMAGE exists (use --force to rebuild it)"
else
    command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
    [ "$(id -u)" = 0 ] || die "debootstrap needs root"
    ROOTFS=$(mktemp -d /tmp/smpc-rootfs.XXXXXX)
    trap 'rm -rf "$ROOTFS"' EXIT
    MIRROR=$(mirror)
    say "debootstrap $SUITE from $MIRROR into $ROOTFS"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 \
        || { tail -n 20 "$ROOTFS.log" >&2; die "debootstrap failed (log: $ROOTFS.log)"; }
    rm -f "$ROOTFS.log"
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
    tar -C "$ROOTFS" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$IMAGE" >/dev/null
    say "built $IMAGE ($(docker run --rm "$IMAGE" python3 --version))"
fi

# --- 2. this machine's pip settings, in the build context ------------------------------------
mkdir -p "$HERE/local/wheels"
pip_setting() {  # pip's value for setting $1 (cert, find-links), as `pip config list` shows it
    { pip3 config list || python3 -m pip config list; } 2>/dev/null \
        | sed -n "s/^[^=]*\.$1='\(.*\)'\$/\1/p" | head -n 1
}
CERT=${PIP_CERT:-$(pip_setting cert)}
if [ -n "$CERT" ] && [ -f "$CERT" ]; then
    cp "$CERT" "$HERE/local/ca.pem"
    say "pip in the build trusts $CERT (copied to docker/local/ca.pem)"
fi
LINKS=${PIP_FIND_LINKS:-$(pip_setting find-links)}
TORCH_FROM="--index-url https://download.pytorch.org/whl/cpu"
for dir in $LINKS; do
    wheel=$(ls "$dir"/torch-2.13.0+cpu-cp311-*.whl 2>/dev/null | head -n 1 || true)
    if [ -n "$wheel" ]; then
        [ -f "$HERE/local/wheels/$(basename "$wheel")" ] || cp "$wheel" "$HERE/local/wheels/"
        TORCH_FROM="--find-links /local/wheels"
        say "torch from $wheel (copied to docker/local/wheels/)"
        break
    fi
done

# --- 3. the build arguments, for compose ---------------------------------------------------
{
    echo "# written by docker/build-local-base.sh: this machine's build settings (not committed)"
    echo "SMPC_BASE=$IMAGE"
    [ -f "$HERE/local/ca.pem" ] && echo "SMPC_PIP_CERT=/local/ca.pem"
    echo "SMPC_TORCH_FROM=$TORCH_FROM"
} >"$HERE/.env"
say "wrote docker/.env:"
sed -e '1d' -e 's/^/  /' "$HERE/.env"
