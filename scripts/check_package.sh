#!/usr/bin/env bash
# Check the package as users get it from `pip install .` (into a scratch folder): exactly one top-level package,
# braid, in site-packages; no top-level name that resolves into braid's files; the console command and
# `python -m braid` work, from anywhere and from the checkout's root (where the benchmarks run); and the installed braid keeps the
# import-linter contracts of pyproject.toml (checked there because only the installed package holds every layer
# under braid/). The checks run with `python -S`, so the development environment's editable install is not used.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/venv_lib.sh"
venv="${BRAID_VENV:-$root/.venv}"
python="$venv/bin/python"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# Built from the tracked files (a copy, so no build/ folder is left in the checkout): an untracked module would fail.
mkdir "$scratch/src" "$scratch/empty"
git -C "$root" ls-files -z --cached --others --exclude-standard | (cd "$root" && xargs -0 cp --parents -t "$scratch/src")
"$python" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation --target "$scratch/site" \
    "$scratch/src" 2>&1 | grep -v "^WARNING: Location" || true
top_level="$(cd "$scratch/site" && ls -d -- */ | sed 's:/$::' | grep -v -e '\.dist-info$' -e '^bin$' | tr '\n' ' ')"
if [[ "$top_level" != "braid " ]]; then
    echo "check_package: pip install . put these top-level packages into site-packages: $top_level(want: braid)" >&2
    exit 1
fi
installed() { (cd "$1" && shift && PYTHONPATH="$scratch/site:$venv_site" "$python" -S "$@"); }
venv_site="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# No top-level name may resolve into braid's own files (the installed copy, or the checkout's layer folders), or it
# would stand in for the third-party package of that name (Hugging Face's kernels, proto-plus's proto, ...). From an
# empty folder none resolves there at all. From the checkout's root, which is on sys.path there, the layer folders
# are namespace portions, which the import system ranks below any module or package installed under the same name:
# so a fake third-party package of each name, placed after the root on sys.path, must be the one that imports.
mkdir "$scratch/third-party"
layers="$(layer_folders "$root")"
for name in $layers; do mkdir "$scratch/third-party/$name" && touch "$scratch/third-party/$name/__init__.py"; done
for cwd in "$scratch/empty" "$root"; do
    for fake in "" "$scratch/third-party"; do
        (cd "$cwd" && PYTHONPATH="$scratch/site:$venv_site${fake:+:$fake}" "$python" -S - "$scratch/site/braid" "$root" \
            "$fake" $layers) <<'PY'
import importlib.util
import sys
from pathlib import Path

installed_braid, checkout, fake, *layers = sys.argv[1:]
# braid's own files: the installed package and the checkout's package folders (not its .venv or build/).
ours = [Path(installed_braid), Path(checkout) / "braid", *(Path(checkout) / name for name in layers)]
at_root = Path.cwd().resolve() == Path(checkout).resolve()
wrong = {}
for name in layers:
    spec = importlib.util.find_spec(name)
    places = [] if spec is None else [spec.origin or "", *(spec.submodule_search_locations or [])]
    ours_here = any(Path(p).resolve().is_relative_to(root) for p in places if p for root in ours)
    namespace = spec is not None and spec.origin is None
    # Allowed: nothing else of that name installed, at the root, where the folder is a namespace portion.
    if (fake and spec is None) or (ours_here and (fake or not at_root or not namespace)):
        wrong[name] = places
if wrong:
    sys.exit(f"check_package: from {Path.cwd()}, top-level names resolve into braid's files: {wrong}")
PY
    done
done
installed "$scratch/empty" "$scratch/site/bin/braid" --help >/dev/null
installed "$scratch/empty" -m braid index build --help >/dev/null
installed "$root" -m braid eval --help >/dev/null
installed "$root" -m benchmarks.binary_table --help >/dev/null
# Package data: the built-in pipelines and every built-in score head in the checkout must be installed with the code.
heads="$(cd "$root/ranker/heads" && ls -- *.json | sed 's/\.json$//' | tr '\n' ' ')"
installed "$scratch/empty" -c 'import sys; from braid.pipelines.spec import builtin_pipelines; from braid.ranker.score_head \
import builtin_heads; assert "hybrid-rerank" in builtin_pipelines() and builtin_heads() == sorted(sys.argv[1].split()), \
builtin_heads()' "$heads"
echo "check_package: pip install . installs braid alone; the braid command and python -m braid work"
# From an empty folder, so that the repository's own folders cannot stand in for the installed ones. grimp (import-
# linter's graph) does not walk into a folder without __init__.py inside a regular package, and braid's layers are
# such folders (namespace portions): the scratch copy gets empty ones, which change no import.
for name in $layers; do touch "$scratch/site/braid/$name/__init__.py"; done
cd "$scratch/empty"
PYTHONPATH="$scratch/site" "$venv/bin/lint-imports" --no-cache "$root/pyproject.toml"
