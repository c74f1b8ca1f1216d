#!/bin/sh
# make_fixtures.sh - regenerate every cross-check fixture (tests/data/twin_<arch>.bin) from
# the PyTorch twin, then run the C test against them. Run after a change to the model's
# computation (common/engine/model.c, nn.c) once the twin (reference/twin.py) mirrors it.
#
# usage: reference/make_fixtures.sh [BUILD=build]
# PYTHON defaults to Debian's /usr/bin/python3 with python3-torch (docs/twin.md).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${1:-$root/build}
PYTHON=${PYTHON:-/usr/bin/python3}
"$PYTHON" "$here/make_fixture.py" "$root/tests/data"
if [ -d "$build" ]; then
    cmake --build "$build" --target test_twin
    OPENBLAS_NUM_THREADS=1 "$build/test_twin"
fi
