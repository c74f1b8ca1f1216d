#!/bin/sh
# compose.sh - docker-compose.yml is valid against the Compose Specification, and its topic
# list matches config/worker.properties. No Docker engine needed: the schema check is
# check-jsonschema's vendored compose-spec, installed into a venv in the build directory.
#   usage: compose.sh SOURCE_DIR BUILD_DIR      (exit 77 = skipped: no python3 venv/PyPI)
set -eu
SRC=$1
VENV=$2/venv-compose
if [ ! -x "$VENV/bin/check-jsonschema" ]; then
    if ! python3 -m venv "$VENV" >/dev/null 2>&1 ||
       ! "$VENV/bin/pip" install -q "check-jsonschema==0.39.0" "pyyaml>=6" >/dev/null 2>&1; then
        echo "compose.sh: SKIPPED: cannot install check-jsonschema (python3-venv and PyPI needed)"
        rm -rf "$VENV"
        exit 77
    fi
fi
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$SRC/docker-compose.yml"
# topics: <prefix>.events.<scenario> for every scenario, <prefix>.requests/.predictions/.dlq
"$VENV/bin/python" - "$SRC" <<'PY'
import re, sys, yaml
src = sys.argv[1]
props = {}
for line in open(f"{src}/config/worker.properties"):
    line = line.strip()
    if line and not line.startswith(("#", "!")) and "=" in line:
        k, v = line.split("=", 1)
        props[k.strip()] = v.strip()
prefix = props.get("topic.prefix", "m3rec")
scen = [s.strip() for s in props.get("scenarios", "home,search,product").split(",")]
want = {f"{prefix}.events.{s}" for s in scen} | {f"{prefix}.{t}" for t in ("requests", "predictions", "dlq")}
compose = yaml.safe_load(open(f"{src}/docker-compose.yml"))
script = "\n".join(compose["services"]["topics"]["command"])
m = re.search(r"for t in ([^;]+);", script)
have = set(m.group(1).split()) if m else set()
if have != want:
    sys.exit(f"compose.sh: docker-compose.yml creates {sorted(have)} but config/worker.properties needs {sorted(want)}")
print(f"compose.sh: docker-compose.yml is valid and creates the {len(want)} topics of config/worker.properties")
PY
