#!/usr/bin/env bash
# One idempotent set-up for a pip-only machine: .venv with the pinned CPU torch, the ROS 2 Kilted
# wheels, the rosidl build of vla_rl_interfaces, this package (editable, with test extras) and
# LeRobot's dataset code for the LeRobot test (requirements/lerobot.txt).
# Each stage is skipped when the files it depends on have not changed, so a re-run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
PY=$VENV/bin/python
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)

log() { printf '[setup] %s\n' "$*"; }
# A stage's stamp is the hash of this script plus the files the stage depends on.
stamp_of() { cat scripts/setup.sh "$@" | sha256sum | cut -c1-16; }
done_already() { [ -f "$VENV/.stamps/$1" ] && [ "$(cat "$VENV/.stamps/$1")" = "$2" ]; }
mark_done() { mkdir -p "$VENV/.stamps"; echo "$2" >"$VENV/.stamps/$1"; }

if [ ! -x "$PY" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi

s=$(stamp_of requirements/torch.txt requirements/ros.txt)
if ! done_already deps "$s"; then
  # The CPU build first: an open torch requirement resolved later would pull a multi-GB CUDA build.
  log "installing torch (CPU) and the ROS 2 Kilted wheels"
  "${PIP[@]}" -r requirements/torch.txt
  "${PIP[@]}" -r requirements/ros.txt
  mark_done deps "$s"
fi

s=$(stamp_of msg/CMakeLists.txt msg/package.xml msg/msg/* msg/srv/*)
if ! done_already interfaces "$s"; then
  log "building vla_rl_interfaces with rosidl into $VENV"
  # The generator wheels' CMake exports name the wheel build machine's Python and numpy include
  # dirs; point them at this venv's (idempotent: the pattern only matches the original paths).
  py_inc=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  np_inc=$("$PY" -c 'import numpy; print(numpy.get_include())')
  { grep -l '/opt/python/cp311-cp311' "$VENV"/share/*/cmake/*__rosidl_generator_pyExport.cmake || true; } |
    xargs -r sed -i \
      -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_inc#g" \
      -e "s#/opt/python/cp311-cp311/include/python3.11#$py_inc#g"
  export AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV
  rm -rf build/vla_rl_interfaces && mkdir -p build
  cmake -S msg -B build/vla_rl_interfaces -DCMAKE_INSTALL_PREFIX="$VENV" -DBUILD_TESTING=OFF \
    -DPython3_EXECUTABLE="$PY" -DCMAKE_BUILD_TYPE=Release >build/interfaces.log 2>&1 &&
    cmake --build build/vla_rl_interfaces -j"$(nproc)" >>build/interfaces.log 2>&1 &&
    cmake --install build/vla_rl_interfaces >>build/interfaces.log 2>&1 ||
    { tail -n 40 build/interfaces.log; log "interface build failed; full log: build/interfaces.log"; exit 1; }
  mark_done interfaces "$s"
fi

s=$(stamp_of setup.py setup.cfg package.xml)
if ! done_already package "$s"; then
  log "installing vla_rl_ros (editable, with test extras)"
  "${PIP[@]}" -e ".[test]"
  mark_done package "$s"
fi

s=$(stamp_of requirements/lerobot.txt)
if ! done_already lerobot "$s"; then
  # For test/test_data_lerobot.py only. --no-deps: lerobot pins torch<2.11 and an older
  # huggingface-hub; requirements/lerobot.txt lists every package it needs and says why.
  log "installing LeRobot's dataset code for the tests (--no-deps)"
  "${PIP[@]}" --no-deps -r requirements/lerobot.txt
  mark_done lerobot "$s"
fi
log "ready: $VENV"
