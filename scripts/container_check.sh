#!/usr/bin/env bash
# Build the Dockerfile's `cpu` target with podman and prove the image serves: ready, a Triton-client inference
# equal to ONNX Runtime on the host, the HEALTHCHECK, the non-root user, a graceful SIGTERM, the image size.
#
#   sudo scripts/container_check.sh          # Debian/Ubuntu host, root (rootful podman)
#
# One summary line per check on stdout (`container-check: <check>: PASS|FAIL|INFO ...`); exit 0 when every
# check passed, 1 when one failed, 3 when it cannot run here (not root, no apt to install podman, Debian's
# archive unreachable for the base image). Figures (build time, time to ready, image size) are printed, not
# judged against a clock: speed targets live in benchmarks/results/container.md.
#
# Environment:
#   DEPLOYKIT_CONTAINER_WORK   work directory holding ALL podman state (storage, run root, tmp), the cached
#                              base image and the logs; reused by the next run (default
#                              /var/tmp/deploykit-container-check). DEPLOYKIT_CONTAINER_PURGE=1 removes it at the end.
#   DEPLOYKIT_PYTHON           host Python with deploykit[export,test] (default: .venv/bin/python, else python3)
#   CPU_BASE_IMAGE             base image to build on; default: python:3.11-slim pulled when a registry answers,
#                              else a Debian image bootstrapped here with debootstrap (cached in the work dir)
#   DEBIAN_MIRROR              archive for debootstrap (default http://deb.debian.org/debian)
#   DEPLOYKIT_CONTAINER_KEEP_IMAGE=1   keep the built image (localhost/deploykit-check:cpu) for a closer look
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

WORK=${DEPLOYKIT_CONTAINER_WORK:-/var/tmp/deploykit-container-check}
PY=${DEPLOYKIT_PYTHON:-}
[ -n "$PY" ] || { [ -x .venv/bin/python ] && PY=$REPO/.venv/bin/python || PY=$(command -v python3); }
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SIZE_LIMIT_MB=450
READY_TARGET_S=2
IMAGE=localhost/deploykit-check:cpu
CTR=deploykit-check-$$
FAILED=0

say() { printf 'container-check: %s\n' "$*"; }
pass() { say "$1: PASS ${2:-}"; }
fail() { say "$1: FAIL ${2:-}"; FAILED=1; }
cannot() { say "cannot run here: $*"; exit 3; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# ------------------------------------------------------------------------------------------- tools
[ "$(id -u)" = 0 ] || cannot "needs root (rootful podman with runc); run it with sudo"
missing=()
for tool in podman buildah debootstrap runc newuidmap fuse-overlayfs; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || cannot "${missing[*]} missing and no apt-get to install them"
    say "installing podman, buildah, debootstrap, runc, uidmap, fuse-overlayfs from Debian (missing: ${missing[*]})"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
          podman buildah debootstrap runc uidmap fuse-overlayfs conmon ca-certificates; } >"/tmp/container-check-apt.$$.log" 2>&1 \
        || { tail -5 "/tmp/container-check-apt.$$.log"; cannot "apt-get could not install podman and its tools (log: /tmp/container-check-apt.$$.log)"; }
    rm -f "/tmp/container-check-apt.$$.log"
fi
"$PY" -c "import deploykit, torch, onnxruntime, tritonclient.http" 2>/dev/null \
    || cannot "$PY lacks deploykit[export,test] (torch, onnxruntime, tritonclient[http]): set DEPLOYKIT_PYTHON"

# ----------------------------------------------------------------- podman, all state under $WORK
mkdir -p "$WORK"/{storage,run,tmp,cache,logs}
WORK=$(cd "$WORK" && pwd)
cat >"$WORK/containers.conf" <<EOF
# Written by scripts/container_check.sh. crun 1.8 refuses these VMs' hybrid cgroups: runc. The VM lacks
# CAP_SYS_RESOURCE, so the default ulimits (nofile 1048576) must come down to what it may set.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$WORK/tmp"
EOF
cat >"$WORK/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$WORK/storage"
runroot = "$WORK/run"
EOF
export CONTAINERS_CONF=$WORK/containers.conf CONTAINERS_STORAGE_CONF=$WORK/storage.conf TMPDIR=$WORK/tmp
pm() { podman --root "$WORK/storage" --runroot "$WORK/run" --tmpdir "$WORK/tmp" "$@"; }
pm info >"$WORK/logs/info.txt" 2>&1 || { tail -3 "$WORK/logs/info.txt"; cannot "podman does not start (see $WORK/logs/info.txt)"; }

EXPORT_PID=
cleanup() {
    [ -n "$EXPORT_PID" ] && kill "$EXPORT_PID" 2>/dev/null && wait "$EXPORT_PID" 2>/dev/null
    pm rm -f -t 0 "$CTR" >/dev/null 2>&1
    [ "${DEPLOYKIT_CONTAINER_KEEP_IMAGE:-0}" = 1 ] || pm rmi -f "$IMAGE" >/dev/null 2>&1
    pm image prune -f >/dev/null 2>&1      # the build stage left untagged
    rm -rf "$WORK/models" "$WORK/tmp"/* "$WORK/pip.conf"
    if [ "${DEPLOYKIT_CONTAINER_PURGE:-0}" = 1 ]; then
        pm system reset -f >/dev/null 2>&1
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# -------------------------------------------------------------------------------------- base image
SUITE=$(. /etc/os-release 2>/dev/null; echo "${VERSION_CODENAME:-bookworm}")
BASE=${CPU_BASE_IMAGE:-}
if [ -z "$BASE" ]; then
    BASE=localhost/deploykit-base:$SUITE
    TARBALL=$WORK/cache/base-$SUITE.tar
    if pm image exists "$BASE"; then
        say "base image: $BASE (reused from $WORK)"
    elif [ -s "$TARBALL" ]; then
        pm import -q "$TARBALL" "$BASE" >/dev/null || cannot "podman import of the cached $TARBALL failed"
        say "base image: $BASE (imported from the cached $TARBALL)"
    elif timeout 5 bash -c 'exec 3<>/dev/tcp/registry-1.docker.io/443' 2>/dev/null \
            && pm pull -q docker.io/library/python:3.11-slim >"$WORK/logs/pull.log" 2>&1; then
        BASE=docker.io/library/python:3.11-slim
        say "base image: $BASE (pulled)"
    else
        host=$(echo "$MIRROR" | sed -E 's#^[a-z]+://([^/:]+).*#\1#')
        timeout 10 bash -c "exec 3<>/dev/tcp/$host/80" 2>/dev/null \
            || cannot "no image registry and no Debian archive ($MIRROR) reachable to make a base image"
        say "base image: no registry reachable; debootstrap $SUITE from $MIRROR (a few minutes, once)"
        t0=$(date +%s.%N)
        rootfs=$WORK/tmp/rootfs
        rm -rf "$rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv "$SUITE" "$rootfs" "$MIRROR" \
            >"$WORK/logs/debootstrap.log" 2>&1 \
            || { tail -5 "$WORK/logs/debootstrap.log"; cannot "debootstrap failed (log: $WORK/logs/debootstrap.log)"; }
        # What a base image leaves out: package caches and lists, documentation, locales, logs.
        rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
               "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*
        tar --numeric-owner -C "$rootfs" -cf "$TARBALL.part" . && mv "$TARBALL.part" "$TARBALL"
        rm -rf "$rootfs"
        pm import -q --change 'CMD ["/bin/bash"]' "$TARBALL" "$BASE" >/dev/null || cannot "podman import failed"
        say "base image: $BASE made in $(since "$t0") s"
    fi
fi

# ------------------------------------------------------------------------------ a model, on the host
# Exported while the image builds (the build mostly waits on pip and layer commits).
rm -rf "$WORK/models"
"$PY" -m deploykit export --block se --out "$WORK/models" --force >"$WORK/logs/export.log" 2>&1 &
EXPORT_PID=$!

# ------------------------------------------------------------------------------------------- build
# pip inside the build sees what pip on the host sees: its configuration as one pip.conf, and the local
# folders, indexes, constraint files and CA bundle that configuration names, mounted read-only.
volumes=(-v "$WORK/pip.conf:/etc/pip.conf:ro")
while read -r path; do
    [ -n "$path" ] && volumes+=(-v "$path:$path:ro")
done < <("$PY" scripts/container_probe.py pip-conf "$WORK/pip.conf")
for bundle in /etc/ssl/certs/ca-certificates.crt; do
    [ -f "$bundle" ] && ! printf '%s\n' "${volumes[@]}" | grep -qx "$bundle:$bundle:ro" && volumes+=(-v "$bundle:$bundle:ro")
done
t0=$(date +%s.%N)
if pm build --format docker --target cpu --network host --build-arg "CPU_BASE_IMAGE=$BASE" "${volumes[@]}" \
        -t "$IMAGE" -f Dockerfile . >"$WORK/logs/build.log" 2>&1; then
    pass build "cpu target in $(since "$t0") s (podman build --format docker, base $BASE)"
else
    tail -15 "$WORK/logs/build.log"
    fail build "podman build failed (log: $WORK/logs/build.log)"
    exit 1
fi

bytes=$(pm image inspect --format '{{.Size}}' "$IMAGE")
mb=$((bytes / 1000000))
if [ "$mb" -le "$SIZE_LIMIT_MB" ]; then pass image-size "$mb MB (limit $SIZE_LIMIT_MB MB)"
else fail image-size "$mb MB, over the $SIZE_LIMIT_MB MB limit"; fi

if pm run --rm --network none --no-healthcheck --entrypoint python3 "$IMAGE" -c \
        "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('torch', 'onnxsim', 'onnxscript')))"; then
    pass no-torch "the image holds no torch, onnxsim or onnxscript"
else
    fail no-torch "the serving image carries export-only packages"
fi

wait "$EXPORT_PID"; export_rc=$?; EXPORT_PID=
if [ "$export_rc" = 0 ]; then
    pass export "deploykit export --block se on the host"
else
    tail -5 "$WORK/logs/export.log"; fail export "deploykit export --block se failed on the host"; exit 1
fi
chmod -R a+rX "$WORK/models"

# ------------------------------------------------------------------------------------------- serve
# Host networking with the server bound to 127.0.0.1 on a free port other than 8000: nothing listens beyond
# loopback, and the HEALTHCHECK must find the port the server was started with.
PORT=$("$PY" scripts/container_probe.py free-port)
URL=http://127.0.0.1:$PORT
t0=$(date +%s.%N)
if ! pm run -d --name "$CTR" --network host -v "$WORK/models:/models:ro" "$IMAGE" --host 127.0.0.1 --port "$PORT" \
        >"$WORK/logs/run.log" 2>&1; then
    cat "$WORK/logs/run.log"; fail ready "podman run failed"; exit 1
fi
if ready_s=$("$PY" scripts/container_probe.py wait-ready "$URL" "$t0" 60 2>&1); then
    pass ready "$URL/v2/health/ready is 200"
    met=$(awk -v t="$ready_s" -v limit="$READY_TARGET_S" 'BEGIN { print (t <= limit) ? "met" : "missed" }')
    say "time-to-ready: INFO $ready_s s from podman run (target <= $READY_TARGET_S s: $met)"
else
    pm logs "$CTR" 2>&1 | tail -10
    fail ready "$ready_s"; exit 1
fi

if detail=$("$PY" scripts/container_probe.py infer "$URL" "$WORK/models/se" 2>&1); then
    pass inference "tritonclient.http: $detail"
else
    fail inference "$(echo "$detail" | tail -1)"
fi

if out=$(pm healthcheck run "$CTR" 2>&1); then
    pass healthcheck "podman healthcheck run: ${out:-healthy} (server on port $PORT, not 8000)"
else
    fail healthcheck "podman healthcheck run: $out"
fi

uid=$(pm exec "$CTR" sh -c "awk '/^Uid:/ {print \$2}' /proc/1/status" 2>&1)
if [ "$uid" = 10001 ]; then pass non-root "the server (PID 1) runs as uid 10001"
else fail non-root "the server runs as uid '$uid', expected 10001"; fi

pm stop -t 30 "$CTR" >/dev/null 2>&1
code=$(pm inspect --format '{{.State.ExitCode}}' "$CTR" 2>&1)
if [ "$code" = 0 ] && pm logs "$CTR" 2>&1 | grep -q "deploykit serve: stopped"; then
    pass sigterm "podman stop: exit 0, 'deploykit serve: stopped' logged"
else
    pm logs "$CTR" 2>&1 | tail -5
    fail sigterm "exit code '$code' after SIGTERM, or no 'deploykit serve: stopped' line"
fi

if [ "$FAILED" = 0 ]; then say "all checks passed"; else say "some checks FAILED"; fi
exit "$FAILED"
