#!/usr/bin/env bash
# Installs every Debian package mmsearch needs (only when one is missing) and builds the
# project in Release into build/. Safe to run again: a second run only rebuilds what changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# libopenblas0-openmp matters: Debian's LibTorch links the generic libblas.so.3, and without
# OpenBLAS that is the reference BLAS (about 20x slower matrix products). chromium is for the
# web page's browser test (tests/service_browser_cli_slow_test.cc), driven by playwright-core. The
# python3-* packages and gunicorn run the PyTorch reference of the model (scripts/python/),
# its test (tests/python_reference_test.py) and the Python peer service of the benchmarks.
# libgloo-dev: c10d's ProcessGroupGloo.hpp includes Gloo's headers (distributed training).
packages=(
  build-essential cmake ninja-build pkg-config ccache git
  libtorch-dev libopenblas0-openmp libgloo-dev
  libfaiss-dev libsentencepiece-dev sentencepiece
  libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev
  libcpp-httplib-dev libboost-dev libsqlite3-dev sqlite3
  nlohmann-json3-dev libcli11-dev libspdlog-dev libgtest-dev
  python3 curl chromium
  librsvg2-bin gir1.2-rsvg-2.0 python3-gi-cairo  # SVG rendering (scripts/data_prep/render.py)
  python3-torch python3-numpy python3-opencv python3-sentencepiece python3-faiss
  python3-flask gunicorn
  clang-14 libfuzzer-14-dev libomp-14-dev  # scripts/fuzz.sh: clang, libFuzzer, clang's OpenMP
)
# Node.js and npm for the browser test's driver: the machine's own if it has them, else Debian's.
command -v npm >/dev/null || packages+=(nodejs npm)

"$root/scripts/apt_ensure.sh" setup "${packages[@]}"

# LibTorch and FAISS call whichever libblas.so.3 is selected; pick OpenBLAS's OpenMP build
# (the pthread build, if some other package brought it, oversubscribes LibTorch's OpenMP pool).
for lib in libblas.so.3 liblapack.so.3; do
  want="/usr/lib/x86_64-linux-gnu/openblas-openmp/$lib"
  link="$lib-x86_64-linux-gnu"
  if [ "$(readlink -f "/etc/alternatives/$link" 2>/dev/null)" != "$want" ] && [ -e "$want" ]; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo update-alternatives --set "$link" "$want" >/dev/null
  fi
done

# The browser test's driver, playwright-core, pinned by tests/browser/package-lock.json; it
# downloads no browser (the test points it at Debian's chromium). Reinstalled only when the
# lockfile is newer than node_modules. Without npm the browser test skips itself.
browser="$root/tests/browser"
if [ "$browser/node_modules" -ot "$browser/package-lock.json" ]; then
  if command -v npm >/dev/null; then
    echo "setup: installing the browser test's npm packages"
    npm ci --prefix "$browser" --no-audit --no-fund --loglevel=error
  else
    echo "setup: npm not found; the browser test will be skipped" >&2
  fi
fi

jobs="${MMSEARCH_JOBS:-$(nproc)}"
cmake -S "$root" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$root/build" -j "$jobs"
echo "setup: built $root/build/mmsearch"
