# Shared by setup_env.sh, test_latest.sh and lock.sh (sourced, not run): a Python 3.11 virtual environment with the
# locked installer (uv) in it, and where the CPU build of torch comes from.

# python_311: the interpreter that creates braid's environments (BRAID_PYTHON overrides), or exit 2 with why.
python_311() {
    local python_bin="${BRAID_PYTHON:-python3.11}"
    command -v "$python_bin" >/dev/null || python_bin=python3
    "$python_bin" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null \
        || { echo "braid needs Python 3.11 (set BRAID_PYTHON to its interpreter)" >&2; exit 2; }
    echo "$python_bin"
}

# layer_folders ROOT: the checkout's top-level folders that install as braid's layers (pyproject.toml's package-dir,
# braid/ itself left out), on one line.
layer_folders() {
    "$(python_311)" -c 'import sys, tomllib
folders = tomllib.load(open(sys.argv[1], "rb"))["tool"]["setuptools"]["package-dir"].values()
print(" ".join(folder for folder in folders if folder != "braid"))' "$1/pyproject.toml"
}

# new_venv VENV ROOT: create VENV (or reuse it) and install uv into it from ROOT/requirements/bootstrap.txt, pinned
# and hash-checked; pip only bootstraps uv, which installs everything else. --isolated: a user's pip configuration
# (extra indexes, find-links) has no say in what a hash-checked install fetches.
new_venv() {
    local venv="$1" root="$2" python_bin
    if [[ ! -x "$venv/bin/python" ]]; then
        python_bin="$(python_311)"
        "$python_bin" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --isolated --disable-pip-version-check -q --no-deps --require-hashes \
        -r "$root/requirements/bootstrap.txt"
}

# torch_links: uv arguments naming where torch's CPU wheel (torch==2.13.0+cpu) is found. PyPI holds only the CUDA
# build, several GB; this machine keeps the CPU wheel in pip's find-links folder (PIP_FIND_LINKS, or /opt/wheels),
# anywhere else it comes from PyTorch's own CPU index. uv reads no pip configuration, hence the explicit flag.
torch_links() {
    local folder
    for folder in ${PIP_FIND_LINKS:-} /opt/wheels; do
        if compgen -G "$folder/torch-2.13.0+cpu-*.whl" >/dev/null; then
            echo "--find-links=$folder"
            return
        fi
    done
    echo "--find-links=https://download.pytorch.org/whl/torch/"
}

# quiet: uv's installs without its per-package lines; errors still reach stderr.
export UV_NO_PROGRESS=1 UV_LINK_MODE=copy
