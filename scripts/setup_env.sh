#!/usr/bin/env bash
# Create (or update) the project's virtual environment and build the package with colcon.
#
# Idempotent: a second run reinstalls nothing when requirements.txt is unchanged (a stamp
# file in the venv records its hash) and colcon rebuilds only what changed.
#
#   ZS_VENV      where the venv lives (default: ~/.cache/zs_perception/venv,
#                shared by every checkout on this machine, since torch alone is 5.5 GB)
#   ZS_PYTHON    interpreter to build the venv from (default: python3; 3.11 or 3.12)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${ZS_PYTHON:-python3}"
PYVER="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
case "$PYVER" in
  3.11|3.12) ;;
  *) echo "setup_env: ROS 2 Jazzy wheels exist for Python 3.11 and 3.12, but $PYTHON is $PYVER." \
          "Set ZS_PYTHON to a python3.11 or python3.12 interpreter." >&2; exit 1 ;;
esac
VENV="${ZS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/zs_perception/venv}"
STAMP="$VENV/.zs_perception_requirements.sha256"
WANT="$(cat "$ROOT/requirements.txt" "$ROOT/scripts/setup_env.sh" | sha256sum | cut -d' ' -f1)"

log() { echo "[setup_env] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
fi

if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  log "installing requirements into $VENV (first time: several minutes)"
  # torch first and pinned: the pinned wheels are on this machine's disk; an unpinned
  # resolve could pull a multi-GB CUDA build from the network.
  "$VENV/bin/pip" install --quiet "torch==2.14.1" "torchvision==0.29.1"
  "$VENV/bin/pip" install --quiet -r "$ROOT/requirements.txt"

  # The ROS wheels' CMake export files name the wheel build machine's Python and numpy
  # include dirs; CMake refuses non-existent include paths, so point them at this venv.
  PY_INC="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  NP_INC="$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')"
  BUILD_PY="/opt/python/cp${PYVER/./}-cp${PYVER/./}"
  for f in $(grep -rlF "$BUILD_PY/" "$VENV/share" || true); do
    sed -i -e "s#$BUILD_PY/include/python$PYVER#$PY_INC#g" \
           -e "s#$BUILD_PY/lib/python$PYVER/site-packages/numpy/_core/include#$NP_INC#g" "$f"
  done
  echo "$WANT" > "$STAMP"
else
  log "venv $VENV is up to date"
fi

log "building zs_perception with colcon"
cd "$ROOT"
export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
"$VENV/bin/colcon" --log-base "$ROOT/log" build --merge-install --symlink-install \
  --base-paths "$ROOT" --build-base "$ROOT/build" --install-base "$ROOT/install" \
  --event-handlers console_cohesion- summary+ status- \
  --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF
echo "$VENV" > "$ROOT/install/.zs_venv"
log "done: source scripts/env.sh to use the build"
