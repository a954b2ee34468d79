#!/usr/bin/env bash
# Builds, or reuses, the virtual environment where TerraTorch and timm meet geofm_hf.
#
# Why a second environment: the main one pins the CPU torch wheel, with which torchvision (and so
# timm's and TerraTorch's imports) does not load; TerraTorch needs its own torch/torchvision pair.
# The pair is installed first, and every later pip call is constrained to it, so installing
# geofm_hf and its dependencies cannot swap torch underneath TerraTorch.
#
# Usage: bash scripts/interop_venv.sh          (venv in .venv-interop, or $GEOFM_INTEROP_VENV)
# The venv is keyed by a hash of the pins, the interpreter and geofm_hf's dependency list: an
# existing venv with the same key is reused (seconds); another key rebuilds it (minutes).
# The venv's python is printed on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
PYTHON="${PYTHON:-python3}"
VENV="${GEOFM_INTEROP_VENV:-$REPO/.venv-interop}"
# terratorch 1.2.12+ needs Python 3.12; 1.2.11 is the last release for 3.10/3.11.
PINS=(torch==2.14.1 torchvision==0.29.1 terratorch==1.2.11)
TEST_DEPS=(pytest pytest-timeout)

deps_of_repo() {
  "$PYTHON" - <<'PY'
import tomllib

with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
print("\n".join(project["dependencies"]))
PY
}

KEY=$( { printf '%s\n' "${PINS[@]}" "${TEST_DEPS[@]}"; "$PYTHON" --version; deps_of_repo; } \
  | sha256sum | cut -c1-16)
STAMP="$VENV/.geofm-interop-key"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$KEY" ]]; then
  echo "interop venv: reusing $VENV (key $KEY)"
else
  if [[ -e "$VENV" ]]; then
    echo "interop venv: key changed (want $KEY), rebuilding $VENV"
    rm -rf "$VENV"
  fi
  echo "interop venv: creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
  # Keeps git and ruff out of the venv wherever it lies inside the checkout.
  echo '*' >"$VENV/.gitignore"
  printf '%s\n' "${PINS[@]}" >"$VENV/pins.txt"
  echo "interop venv: installing ${PINS[*]} (CUDA build of torch; runs on CPU too)"
  "$VENV/bin/python" -m pip install --quiet "${PINS[@]}"
  echo "interop venv: installing geofm_hf's dependencies and ${TEST_DEPS[*]}, constrained to the pins"
  # -c keeps the pins: a dependency asking for another torch fails here instead of replacing it.
  "$VENV/bin/python" -m pip install --quiet -c "$VENV/pins.txt" -r <(deps_of_repo) "${TEST_DEPS[@]}"
  echo "$KEY" >"$STAMP"
fi

# geofm_hf itself, editable and without dependencies (they are in already), from THIS checkout:
# a venv shared through GEOFM_INTEROP_VENV may have been pointed at another clone.
# (Asked from / so that the checkout in the working directory does not answer instead.)
here=$(cd / && "$VENV/bin/python" -c 'import geofm_hf, os; print(os.path.dirname(os.path.dirname(geofm_hf.__file__)))' 2>/dev/null || true)
if [[ "$here" != "$REPO" ]]; then
  echo "interop venv: installing geofm_hf from $REPO (editable, --no-deps)"
  "$VENV/bin/python" -m pip install --quiet --no-deps -e "$REPO"
fi
# Versions from the installed metadata (importing terratorch alone takes ~20 s).
"$VENV/bin/python" -c 'from importlib.metadata import version
print("interop venv:", ", ".join(f"{p} {version(p)}" for p in ("torch", "torchvision", "terratorch", "timm", "transformers")))'
echo "$VENV/bin/python"
