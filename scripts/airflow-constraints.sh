#!/bin/sh
# Writes templates/airflow/constraints-VERSION-pyPYTHON.txt: the exact packages that
# `apache-airflow[celery,postgres]==VERSION` (plus any PINS) resolves to on Python PYTHON (3.11:
# Debian 12's, 3.13: Debian 13's; the airflow stage picks the file by the host's release,
# airflow_python_by_release). The airflow stage installs against that file, so that two
# provisions a month apart get the same packages. Run it for each Python when changing
# `airflow_version`.
#
# Where this machine's python3 is PYTHON, the packages are installed into a throw-away venv and
# checked to import the Celery executor. Otherwise they are only resolved (`pip install --dry-run
# --report` for that Python on x86_64 Linux, wheels only) and nothing is imported: check such a
# file on a host of that release (or run this script there).
#
# 3.3.2 needs `celery==5.6.3 kombu==5.6.2`: celery 5.7.0 dropped `retry` from
# celery.backends.database, which the Celery provider 3.26.0 imports (the scheduler cannot load
# the CeleryExecutor).
set -eu
usage='usage: scripts/airflow-constraints.sh AIRFLOW_VERSION PYTHON_VERSION [PIN...]'
version=${1:?$usage}
python=${2:?$usage}
shift 2
case $python in
  3.[0-9]|3.[0-9][0-9]) ;;
  *) echo "$usage (PYTHON_VERSION like 3.13, not $python)" >&2; exit 1 ;;
esac
cd "$(dirname "$0")/.."
out=templates/airflow/constraints-$version-py$python.txt
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
local_python=$("$venv/bin/python" -c 'import sys; print(*sys.version_info[:2], sep=".")')
{
  echo "# apache-airflow[celery,postgres]==$version${*:+ with $*} on Python $python,"
  if [ "$local_python" = "$python" ]; then
    echo "# resolved $(date -u +%Y-%m-%d) by scripts/airflow-constraints.sh. The airflow stage installs with --constraint this file."
    "$venv/bin/pip" install -q --disable-pip-version-check "apache-airflow[celery,postgres]==$version" "$@" >&2
    AIRFLOW_HOME="$venv/home" "$venv/bin/python" -c 'import airflow.providers.celery.executors.celery_executor' >/dev/null
    "$venv/bin/pip" freeze --disable-pip-version-check
  else
    echo "# resolved $(date -u +%Y-%m-%d) by scripts/airflow-constraints.sh without a Python $python (not imported). The airflow stage installs with --constraint this file."
    "$venv/bin/pip" install -q --disable-pip-version-check --upgrade pip >&2
    abi=cp$(echo "$python" | tr -d .)
    "$venv/bin/pip" install -q --disable-pip-version-check --dry-run --ignore-installed --report "$venv/report.json" \
      --python-version "$python" --implementation cp --abi "$abi" --only-binary=:all: \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform linux_x86_64 --target "$venv/target" \
      "apache-airflow[celery,postgres]==$version" "$@" >&2
    python3 -c 'import json, sys
items = json.load(open(sys.argv[1]))["install"]
for m in sorted((i["metadata"] for i in items), key=lambda m: m["name"].lower()):
    print(m["name"] + "==" + m["version"])' "$venv/report.json"
  fi
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out ($(grep -vc '^#' "$out") packages)"
