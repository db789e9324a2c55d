#!/usr/bin/env bash
# Check the package as users get it from `pip install .` (into a scratch folder): exactly one top-level package,
# braid, in site-packages; none of the old generic names importable; the console command and `python -m braid` work,
# from anywhere and from the checkout's root (where the benchmarks run); and the installed braid keeps the
# import-linter contracts of pyproject.toml (checked there because only the installed package holds every layer
# under braid/). The checks run with `python -S`, so the development environment's editable install is not used.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$root/.venv/bin/python"
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
venv_site="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
installed() { (cd "$1" && shift && PYTHONPATH="$scratch/site:$venv_site" "$python" -S "$@"); }
installed "$scratch/empty" - <<'PY'
import importlib.util
import sys

leaked = [name for name in ("eval", "service", "proto", "kernels", "indexer", "retriever", "ranker", "common",
                            "pipelines") if importlib.util.find_spec(name) is not None]
sys.exit(f"check_package: top-level modules importable after install: {leaked}" if leaked else 0)
PY
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
# From an empty folder, so that the repository's own folders cannot stand in for the installed ones.
cd "$scratch/empty"
PYTHONPATH="$scratch/site" "$root/.venv/bin/lint-imports" --no-cache "$root/pyproject.toml"
