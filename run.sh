#!/usr/bin/env bash
# One entry point for a fresh machine: sets up .venv on first use, then
#   ./run.sh demo [OUT_DIR]   the end-to-end demo (train on CPU, export, convert, infer on video, benchmark)
#   ./run.sh test [PYTEST_ARGS...]   ruff, then the test suite (2 workers; PSP_TEST_WORKERS=0 runs it in one process)
#   ./run.sh lint                    ruff alone
set -euo pipefail
cd "$(dirname "$0")"
VENV="${PSP_VENV:-.venv}"
PY="$VENV/bin/python"

# Debian packages for the live-stream tests' real RTSP server (gst-rtsp-server through the system python3-gi,
# H.264 from x264) and the ffmpeg tool the README's examples pipe from. Skipped when they are already there.
SYSTEM_PACKAGES="python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
    gstreamer1.0-plugins-ugly ffmpeg"

system_packages() {
    # shellcheck disable=SC2086
    dpkg-query -W -f='${Status}\n' $SYSTEM_PACKAGES 2>/dev/null | grep -c "install ok installed" \
        | grep -qx "$(echo $SYSTEM_PACKAGES | wc -w)" && return 0
    if ! command -v apt-get >/dev/null; then
        echo "notice: no apt-get; the RTSP tests skip without: $SYSTEM_PACKAGES" >&2
        return 0
    fi
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive  # no prompts: CI has no terminal
    echo "== installing $SYSTEM_PACKAGES (first run only)"
    # shellcheck disable=SC2086
    $sudo apt-get install -y -qq $SYSTEM_PACKAGES >/dev/null \
        || { $sudo apt-get update -qq && $sudo apt-get install -y -qq $SYSTEM_PACKAGES >/dev/null; } \
        || echo "notice: could not install $SYSTEM_PACKAGES; the RTSP tests will skip" >&2
}

setup() {
    system_packages
    local stamp="$VENV/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
    [ -f "$stamp" ] && return 0
    echo "== setting up $VENV (first run only)"
    [ -x "$PY" ] || python3 -m venv "$VENV"
    "$PY" -m pip install -q --upgrade pip
    # Exactly this torch: an unpinned one pulls gigabytes of CUDA packages on a CPU machine.
    "$PY" -m pip install -q "torch==2.13.0"
    "$PY" -m pip install -q -e ".[torch,convert,bench,dev,openvino]"
    # The serve extra's real Triton server (psp-serve, the Triton tests). --no-deps: the wheel pins numpy<2 for its
    # own Python API, which we do not use; the server's python backend reads tensors through DLPack, correct with
    # numpy 1 and 2 alike (runtime/triton_steps.py), so the environment keeps numpy 2.
    "$PY" -m pip install -q --no-deps "nvidia-pytriton==0.7.0"
    rm -f "$VENV"/.installed-*
    touch "$stamp"
}

cmd="${1:-}"; shift || true
case "$cmd" in
    demo)
        setup
        exec "$VENV/bin/python" -m experiments.demo "${@:-demo-out}" ;;
    lint)
        setup
        "$VENV/bin/ruff" check . ;;
    test)
        setup
        # The linter first (pyflakes, pycodestyle errors, import order; pyproject.toml's [tool.ruff]): a second.
        "$VENV/bin/ruff" check --quiet . || { echo "error: ruff found problems (./run.sh lint shows them)" >&2; exit 1; }
        set +e
        # Two workers (pytest-xdist), as CI has 2 cores; each worker takes its share of the cores (tests/conftest.py).
        # loadgroup: the tests of one xdist_group (the real Triton server's) run on one worker.
        "$VENV/bin/python" -m pytest -n "${PSP_TEST_WORKERS:-2}" --dist loadgroup "$@"
        rc=$?
        # pytest exit 5 means no test ran: that is a failure, not a pass.
        [ "$rc" -eq 5 ] && echo "error: pytest collected no tests" >&2
        exit "$rc" ;;
    setup)
        setup ;;
    *)
        echo "usage: ./run.sh demo [OUT_DIR] | ./run.sh test [PYTEST_ARGS...] | ./run.sh lint | ./run.sh setup" >&2
        exit 2 ;;
esac
