# Source this file (bash) to use the colcon build of zs_perception with the project's venv:
#   source scripts/env.sh
# Made by scripts/setup_env.sh; sets PATH, PYTHONPATH, LD_LIBRARY_PATH and AMENT_PREFIX_PATH.
_zs_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -f "$_zs_root/install/.zs_venv" ]; then
  echo "zs_perception is not built yet: run 'make setup' (or scripts/setup_env.sh) first." >&2
  return 1 2>/dev/null || exit 1
fi
_zs_venv="$(cat "$_zs_root/install/.zs_venv")"
_zs_pyver="$("$_zs_venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
export ZS_PERCEPTION_ROOT="$_zs_root"
# The package's executables (what `ros2 run zs_perception <name>` would find) and the venv.
export PATH="$_zs_root/install/lib/zs_perception:$_zs_venv/bin:$PATH"
export AMENT_PREFIX_PATH="$_zs_root/install:$_zs_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
# The install comes first; the repo root after it makes `python -m benchmarks.<name>` work.
# PYTHONSAFEPATH keeps Python from putting the current directory first on sys.path, where
# the source tree's zs_perception (which lacks the generated messages) would shadow the
# install.
export PYTHONPATH="$_zs_root/install/lib/python$_zs_pyver/site-packages:$_zs_root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONSAFEPATH=1
export LD_LIBRARY_PATH="$_zs_root/install/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Keep DDS discovery on this machine; tests and demos never need the network.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
unset _zs_root _zs_venv _zs_pyver
