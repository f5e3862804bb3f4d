#!/bin/sh
# Writes templates/airflow/constraints-VERSION.txt: the exact packages that
# `apache-airflow[celery,postgres]==VERSION` (plus any PINS) resolves to on Python 3.11 (Debian
# 12's), installed into a throw-away venv here and checked to import the Celery executor. The
# airflow stage installs against that file, so that two provisions a month apart get the same
# packages. Run it when changing `airflow_version`.
#
# 3.3.2 needs `celery==5.6.3 kombu==5.6.2`: celery 5.7.0 dropped `retry` from
# celery.backends.database, which the Celery provider 3.26.0 imports (the scheduler cannot load
# the CeleryExecutor).
set -eu
version=${1:?usage: scripts/airflow-constraints.sh AIRFLOW_VERSION [PIN...]}
shift
cd "$(dirname "$0")/.."
out=templates/airflow/constraints-$version.txt
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "apache-airflow[celery,postgres]==$version" "$@"
AIRFLOW_HOME="$venv/home" "$venv/bin/python" -c 'import airflow.providers.celery.executors.celery_executor' >/dev/null
{
  echo "# apache-airflow[celery,postgres]==$version${*:+ with $*} on Python $("$venv/bin/python" -c 'import sys; print(*sys.version_info[:2], sep=".")'),"
  echo "# resolved $(date -u +%Y-%m-%d) by scripts/airflow-constraints.sh. The airflow stage installs with --constraint this file."
  "$venv/bin/pip" freeze --disable-pip-version-check
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out ($(grep -vc '^#' "$out") packages)"
