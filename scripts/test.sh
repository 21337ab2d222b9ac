#!/usr/bin/env bash
# The test suite on a fresh Debian machine (as root): install, lint, then pytest.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRA_APT_PACKAGES="dataset-fashion-mnist" bash scripts/setup_env.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check .

set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: the suite is missing or broken" >&2
  exit 1
fi
exit "$rc"
