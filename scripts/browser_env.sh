#!/usr/bin/env bash
# The web console's tests drive a real browser: Debian's chromium and chromium-driver (Selenium talks to the
# driver; nothing is downloaded at run time). Installs them with apt when missing (as root, or through sudo).
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
packages=(chromium chromium-driver)
if [[ "$(id -u)" == 0 ]]; then
    apt=(apt-get)
elif command -v sudo >/dev/null; then
    apt=(sudo apt-get)
else
    echo "browser_env: install ${packages[*]} (Debian/Ubuntu packages) for the console tests" >&2
    exit 1
fi
echo "==> installing ${packages[*]} for the console tests" >&2
DEBIAN_FRONTEND=noninteractive "${apt[@]}" update -qq
DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
