#!/usr/bin/env bash
# Build the rlmkit-sandbox image without a container registry.
#
# Makes a Debian bookworm base with debootstrap (once, as
# rlmkit-sandbox-base:bookworm), then builds docker/Dockerfile.sandbox FROM it.
#
# Usage: docker/build-image.sh [--force]
#   --force   rebuild rlmkit-sandbox:$VERSION even if it exists
#             (remove rlmkit-sandbox-base:bookworm to redo the base as well)
#
# Environment:
#   RLMKIT_SANDBOX_IMAGE_VERSION  image tag (default: workspace version from Cargo.toml, else 0.1.0)
#   DEBIAN_MIRROR                 Debian mirror for debootstrap (default: the host's apt mirror,
#                                 else http://deb.debian.org/debian)
set -euo pipefail

readonly IMAGE=rlmkit-sandbox
readonly BASE_IMAGE=rlmkit-sandbox-base:bookworm
readonly SUITE=bookworm
readonly DEFAULT_VERSION=0.1.0
readonly DEFAULT_MIRROR=http://deb.debian.org/debian

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
ROOT_DIR=$(dirname -- "$SCRIPT_DIR")

log() { printf '[build-image] %s\n' "$*"; }
die() { printf '[build-image] error: %s\n' "$*" >&2; exit 1; }

usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}"; }

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $arg" ;;
    esac
done

# Version from `[workspace.package] version = "..."` in the top-level Cargo.toml.
workspace_version() {
    local manifest=$ROOT_DIR/Cargo.toml
    [[ -r $manifest ]] || return 0
    awk '
        /^[[:space:]]*\[/ {
            in_section = ($0 ~ /^[[:space:]]*\[[[:space:]]*workspace\.package[[:space:]]*\][[:space:]]*(#.*)?$/)
            next
        }
        in_section && /^[[:space:]]*version[[:space:]]*=/ {
            if (match($0, /"[^"]*"/)) { print substr($0, RSTART + 1, RLENGTH - 2); exit }
        }
    ' "$manifest"
}

# First http(s) mirror that the host's apt uses for a Debian release suite,
# from one-line .list files and deb822 .sources files.
host_debian_mirror() {
    local suites='^(bookworm|bullseye|buster|trixie|forky|sid|stable|testing|unstable|oldstable|oldoldstable)$'
    local files=() f
    shopt -s nullglob
    [[ -r /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
    files+=(/etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
    shopt -u nullglob
    for f in "${files[@]}"; do
        [[ -r $f ]] || continue
        if [[ $f == *.sources ]]; then
            awk -v suites="$suites" '
                function reset() { types = ""; uris = ""; suite_list = ""; enabled = "yes"; key = "" }
                function check(    n, i, u, s) {
                    if (found || types !~ /(^|[[:space:]])deb([[:space:]]|$)/ || tolower(enabled) == "no") return
                    n = split(suite_list, s, /[[:space:]]+/)
                    for (i = 1; i <= n; i++) if (s[i] ~ suites) break
                    if (i > n) return
                    n = split(uris, u, /[[:space:]]+/)
                    for (i = 1; i <= n; i++) if (u[i] ~ /^https?:\/\//) { print u[i]; found = 1; return }
                }
                BEGIN { reset() }
                /^[[:space:]]*#/ { next }
                /^[[:space:]]*$/ { check(); reset(); next }
                /^[^[:space:]][^:]*:/ {
                    key = tolower(substr($0, 1, index($0, ":") - 1))
                    val = substr($0, index($0, ":") + 1)
                }
                /^[[:space:]]/ { val = $0 }
                key == "types" { types = types " " val }
                key == "uris" { uris = uris " " val }
                key == "suites" { suite_list = suite_list " " val }
                key == "enabled" { enabled = val; gsub(/[[:space:]]/, "", enabled) }
                END { check() }
            ' "$f"
        else
            awk -v suites="$suites" '
                $1 == "deb" {
                    i = 2
                    if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
                    if ($i ~ /^https?:\/\// && $(i + 1) ~ suites) { print $i; exit }
                }
            ' "$f"
        fi
    done | head -n 1 | sed 's:/*$::'
}

need_cmd() { command -v "$1" >/dev/null 2>&1; }

build_base() {
    local mirror=${DEBIAN_MIRROR:-}
    [[ -n $mirror ]] || mirror=$(host_debian_mirror || true)
    [[ -n $mirror ]] || mirror=$DEFAULT_MIRROR

    if [[ $EUID -ne 0 ]]; then
        die "creating $BASE_IMAGE needs root (debootstrap); run this script as root"
    fi
    if ! need_cmd debootstrap; then
        if need_cmd apt-get; then
            log "installing debootstrap"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
        else
            die "debootstrap is missing: install the 'debootstrap' package (it also needs wget or curl)"
        fi
    fi

    workdir=$(mktemp -d "${TMPDIR:-/var/tmp}/rlmkit-sandbox-base.XXXXXX")
    trap cleanup_workdir EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    local rootfs=$workdir/rootfs

    log "debootstrap $SUITE from $mirror (minbase + python3, numpy)"
    if ! debootstrap --variant=minbase --include=python3-minimal,python3-numpy \
        "$SUITE" "$rootfs" "$mirror" >"$workdir/debootstrap.out" 2>&1; then
        tail -n 20 "$workdir/debootstrap.out" >&2
        [[ -f $rootfs/debootstrap/debootstrap.log ]] && tail -n 20 "$rootfs/debootstrap/debootstrap.log" >&2
        die "debootstrap failed"
    fi

    log "trimming base"
    rm -rf --one-file-system "${rootfs:?}"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/archives/partial/* \
        "$rootfs"/var/log/apt/* "${rootfs:?}"/dev/* "$rootfs"/tmp/* "$rootfs"/root/.cache
    : >"$rootfs/etc/resolv.conf"
    rm -f "$rootfs/etc/hostname"
    chmod 0755 "$rootfs"

    log "importing $BASE_IMAGE"
    tar --numeric-owner -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' \
        --message "debootstrap --variant=minbase $SUITE $mirror" \
        - "$BASE_IMAGE" >/dev/null

    cleanup_workdir
    trap - EXIT INT TERM
}

workdir=
cleanup_workdir() {
    [[ -n $workdir && -d $workdir ]] || return 0
    local mounts
    # Anything debootstrap left mounted must go before the tree is removed.
    mounts=$(awk -v dir="$workdir/" 'index($2, dir) == 1 { print $2 }' /proc/self/mounts | sort -r)
    if [[ -n $mounts ]]; then
        while IFS= read -r m; do umount -l "$m" 2>/dev/null || true; done <<<"$mounts"
    fi
    rm -rf --one-file-system -- "$workdir"
    workdir=
}

need_cmd docker || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (is it running, and may this user use it?)"

VERSION=${RLMKIT_SANDBOX_IMAGE_VERSION:-}
[[ -n $VERSION ]] || VERSION=$(workspace_version)
[[ -n $VERSION ]] || VERSION=$DEFAULT_VERSION
[[ $VERSION =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "invalid image tag: $VERSION"

if [[ $force -eq 0 ]] && docker image inspect "$IMAGE:$VERSION" >/dev/null 2>&1; then
    log "$IMAGE:$VERSION exists; nothing to do (use --force to rebuild)"
    if ! docker image inspect "$IMAGE:latest" >/dev/null 2>&1; then
        docker tag "$IMAGE:$VERSION" "$IMAGE:latest"
        log "tagged $IMAGE:latest"
    fi
    exit 0
fi

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "using existing $BASE_IMAGE"
else
    build_base
fi

log "building $IMAGE:$VERSION"
old_id=$(docker image inspect -f '{{.Id}}' "$IMAGE:$VERSION" 2>/dev/null || true)
build_args=(--build-arg "BASE=$BASE_IMAGE" -f "$SCRIPT_DIR/Dockerfile.sandbox"
    -t "$IMAGE:$VERSION" -t "$IMAGE:latest")
if [[ $force -eq 1 ]]; then build_args+=(--no-cache); fi
if ! build_log=$(docker build "${build_args[@]}" "$SCRIPT_DIR" 2>&1); then
    printf '%s\n' "$build_log" | tail -n 30 >&2
    die "docker build failed"
fi

log "checking $IMAGE:$VERSION"
docker run --rm --network none --read-only "$IMAGE:$VERSION" \
    python3 -c 'import numpy, os; assert os.getuid() == 1000; print("python3 + numpy", numpy.__version__, "as uid", os.getuid())' \
    | sed 's/^/[build-image]   /'

# A forced rebuild leaves the previous image untagged: drop it unless something still uses it.
new_id=$(docker image inspect -f '{{.Id}}' "$IMAGE:$VERSION")
if [[ -n $old_id && $old_id != "$new_id" ]] &&
    [[ $(docker image inspect -f '{{len .RepoTags}}' "$old_id" 2>/dev/null) == 0 ]]; then
    if docker image rm "$old_id" >/dev/null 2>&1; then
        old_id=${old_id#sha256:}
        log "removed previous image ${old_id:0:12}"
    fi
fi
log "done: $IMAGE:$VERSION and $IMAGE:latest"
