#!/usr/bin/env bash
# The test suite on a fresh Debian machine (as root): install, lint, a local SLURM, pytest.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRA_APT_PACKAGES="dataset-fashion-mnist" bash scripts/setup_env.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports  # pyproject.toml [tool.importlinter]: imports point down, no circles

# A real single-node SLURM for tests/test_slurm.py (as root: apt, munged, slurmctld, slurmd).
# Only what this starts is stopped at the end; elsewhere those tests skip with the reason.
if .venv/bin/python -c "from launch.slurm_local import available as a; raise SystemExit(not a())"
then
  echo "using the SLURM that is already running" >&2
elif [ "$(id -u)" -eq 0 ]; then
  .venv/bin/python -m launch.cli slurm-local start
  trap '.venv/bin/python -m launch.cli slurm-local stop >/dev/null || true' EXIT
else
  echo "not root: no local SLURM, tests/test_slurm.py will skip" >&2
fi

set +e
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: the suite is missing or broken" >&2
  exit 1
fi
exit "$rc"
