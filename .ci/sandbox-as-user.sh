#!/usr/bin/env bash
# The sandbox and verdict-forgery tests as an unprivileged user, which is how researchers run
# the pipeline on a cluster (the root run in `make test` exercises the other path).
#
# CI runs as root on a fresh clone at a path other users may not be able to read, so the files
# those tests need are copied to a world-readable folder and a small venv is built there from
# /usr/bin/python3 with only what they import. Any failure fails CI (set -euo pipefail), and so
# does a process of that user still running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo ".ci/sandbox-as-user.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (it creates a user)"
command -v setpriv >/dev/null || die "setpriv (util-linux) is missing"

user=${SANDBOX_TEST_USER:-attribution-ci}
id -u "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
home=$(getent passwd "$user" | cut -d: -f6)
[ -d "$home" ] || die "$user has no home folder $home"

work=$(mktemp -d /tmp/attribution-sandbox-ci.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/repo"
cp -r pyproject.toml workflow_scripts tests "$work/repo/"
find "$work/repo" -name __pycache__ -prune -exec rm -rf {} +
/usr/bin/python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check -c constraints-cpu.txt \
    pytest pytest-timeout pandas numpy pyarrow tqdm
chmod -R a+rX "$work"
# pytest's own temporary folders, in the run's folder: /tmp/pytest-of-$user may be left over
# from an earlier user of that name (another uid), which pytest refuses.
mkdir "$work/tmp"
chown "$user:" "$work/tmp"

echo "sandbox tests as $user (uid $(id -u "$user")):"
cd "$work/repo"
setpriv --reuid="$user" --regid="$user" --init-groups \
    env -i HOME="$home" PATH=/usr/bin:/bin LANG=C.UTF-8 HF_HUB_OFFLINE=1 \
    HF_TOKEN=hf_ci_secret_that_must_not_leak WANDB_API_KEY=ci_secret_that_must_not_leak \
    "$work/venv/bin/python" -m pytest -p no:cacheprovider -q --basetemp="$work/tmp/pytest" \
    tests/test_sandbox.py tests/test_sandbox_outcomes.py tests/test_sandbox_isolation.py \
    tests/test_sandbox_forgery.py

sleep 0.5
if pgrep -u "$user" >/dev/null; then
    ps -o pid,ppid,stat,etime,cmd -u "$user" >&2
    die "processes of $user are still running after the sandbox tests"
fi
