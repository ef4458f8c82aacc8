#!/usr/bin/env bash
# ensure-chromium.sh: make sure Debian's chromium is installed, for the test
# that loads the monitoring dashboard in a real headless browser. As root it
# installs it with apt; as another user it prints the command and goes on
# (the test then skips, except under CI, where it fails).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ensure-chromium: chromium is missing; the dashboard test needs it: sudo apt-get install -y chromium" >&2
  exit 0
fi
echo "ensure-chromium: installing chromium" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q -o DPkg::Lock::Timeout=600 chromium >/dev/null
command -v chromium >/dev/null
