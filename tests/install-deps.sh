#!/usr/bin/env bash
# Installs what the test suite runs besides cargo, on Debian or Ubuntu:
#   - chromium (Debian's), Node.js and npm: the real-browser tests (tests/tests/browser.rs);
#   - npm's playwright-core, pinned in tests/browser/package-lock.json: drives that Chromium;
#   - curl and python3: the client examples the suite runs (tests/tests/examples.rs).
# Apt packages need root (or password-less sudo); without either, this prints the command and
# fails. Nothing is downloaded but Debian packages and the npm package.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    sudo=()
  elif sudo -n true 2>/dev/null; then
    sudo=(sudo)
  else
    echo "tests need: ${need[*]}; install them with: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
  echo "installing test dependencies: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# playwright-core only: it drives the Chromium above and never downloads a browser.
if [ ! -f tests/browser/node_modules/playwright-core/package.json ] \
  || [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; then
  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
fi
