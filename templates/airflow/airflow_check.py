#!/usr/bin/python3
"""Managed by hactl: the airflow, web-lb and guard stages' checks (hactl's gates run them).

  jobs --masters A,B [--config F]      live heartbeats of the --every job types (default
       [--every T,..] [--one T,..]     SchedulerJob,TriggererJob) on exactly the masters, and
                                       exactly one of the --one types (default DagProcessorJob)
                                       in the cluster (the venv's python)
  db [--config F]                      the metadata database answers through the configured
                                       connection (the PG LB) and is migrated (the venv's python)
  workers --expect A,B [--config F]    every Celery worker answers a ping (the venv's python;
                                       celery alone, without importing Airflow)
  health --url URL [--ignore C,..]     the API's health JSON: every component healthy (but
                                       those ignored)
  smoke --url URL [--min-workers N]    trigger hactl_smoke through URL with the admin login
                                       (password in $HACTL_AIRFLOW_PASSWORD), wait for success,
                                       count the workers that ran its tasks

Exits 0 when the check passes, 1 with the reason on stdout otherwise. What runs the venv's
python runs as user airflow (`hactl_as_user airflow -- ...`), never as root: the venv is root's,
but what it loads at start or imports may read what airflow can change.
"""

import argparse
import json
import os
import re
import sys
import time

# Python's HTTP client and configparser are imported where used: a gate that starts this script
# on every run pays for what it imports (urllib.request alone costs more CPU than the check).

COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


def fail(message):
    print(message)
    sys.exit(1)


def short(host):
    return (host or "").split(".")[0]


def read_config(path):
    """airflow.cfg as Airflow reads it: hactl writes its values through `ini_value`, which doubles
    every `%` for the interpolation Airflow's parser does (a URL-encoded password is full of
    them), so it is read with that interpolation. Every gate reads airflow.cfg through this."""
    import configparser

    config = configparser.ConfigParser()
    if not config.read(path):
        fail(f"cannot read {path}")
    return config


def database_url(config):
    """The metadata database's libpq URL (SQLAlchemy's driver prefix dropped)."""
    return re.sub(r"^postgresql\+\w+://", "postgresql://", config.get("database", "sql_alchemy_conn"))


def db(args):
    import psycopg2  # the venv's

    try:
        with psycopg2.connect(database_url(read_config(args.config)), connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute("select version_num from alembic_version")
            (revision,) = cur.fetchone()
            where = f"{conn.info.host}:{conn.info.port}"
    except psycopg2.Error as e:
        fail(f"the metadata database does not answer: {str(e).strip().splitlines()[0]}")
    print(f"the metadata database answers through {where}, migrated to {revision}")
    return 0


def jobs(args):
    import psycopg2  # the venv's

    with psycopg2.connect(database_url(read_config(args.config)), connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute(
            "select job_type, hostname from job where state = 'running'"
            " and latest_heartbeat > now() - make_interval(secs => %s)",
            (args.threshold,),
        )
        live = {}
        for job_type, hostname in cur.fetchall():
            live.setdefault(job_type, set()).add(short(hostname))
    masters = set(args.masters.split(","))
    every = [t for t in args.every.split(",") if t]
    one = [t for t in args.one.split(",") if t]
    report = "; ".join(f"{t}: {','.join(sorted(live.get(t, ()))) or 'none'}" for t in every + one)
    ok = all(live.get(t, set()) == masters for t in every) and all(len(live.get(t, ())) == 1 for t in one)
    want = " and ".join(
        ([f"{', '.join(every)} on every master"] if every else []) + ([f"exactly one {', '.join(one)}"] if one else [])
    )
    print(("live jobs: " if ok else f"want {want}; live: ") + report)
    return 0 if ok else 1


def workers(args):
    """Celery's broadcast ping through the cluster's broker (the workers' control mailbox)."""
    from celery import Celery  # the venv's

    config = read_config(args.config)
    app = Celery(broker=config.get("celery", "broker_url"))
    app.conf.broker_connection_timeout = 2
    # AMQP over TLS: the same verification as Airflow's (extra_celery_config's broker_use_ssl).
    extra = json.loads(config.get("celery", "extra_celery_config", fallback="{}") or "{}")
    if extra.get("broker_use_ssl"):
        app.conf.broker_use_ssl = extra["broker_use_ssl"]
    want = set(args.expect.split(","))
    try:
        # Done once as many replies as workers wanted came (else at the timeout): a broadcast
        # otherwise waits the whole timeout for replies that may still come.
        replies = app.control.ping(timeout=args.timeout, limit=len(want))
    except Exception as e:  # kombu's connection errors are many and untyped here
        fail(f"Celery workers answering a ping: none; want {','.join(sorted(want))} ({type(e).__name__}: {e})")
    answered = {
        short(name.split("@", 1)[-1]) for reply in replies for name, answer in reply.items() if answer.get("ok") == "pong"
    }
    if answered != want:
        fail(f"Celery workers answering a ping: {','.join(sorted(answered)) or 'none'}; want {','.join(sorted(want))}")
    print(f"Celery workers answering a ping: {','.join(sorted(answered))}")
    return 0


def request(method, url, body=None, token=None, timeout=10):
    import urllib.request

    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, json.loads(resp.read() or b"null")


def health(args):
    """Fetched by curl: cheaper to start than Python's HTTP client is to import."""
    import subprocess

    url = args.url.rstrip("/") + "/api/v2/monitor/health"
    got = subprocess.run(["curl", "-sS", "-f", "--max-time", "10", url], capture_output=True, text=True, check=False)
    if got.returncode != 0:
        fail(f"no health answer from {args.url}: {got.stderr.strip() or f'curl exit {got.returncode}'}")
    try:
        body = json.loads(got.stdout)
    except ValueError as e:
        fail(f"no health answer from {args.url}: not JSON ({e})")
    ignored = set(args.ignore.split(","))
    states = {c: (body.get(c) or {}).get("status", "absent") for c in COMPONENTS if c not in ignored}
    line = ", ".join(f"{c} {s}" for c, s in states.items())
    if any(s != "healthy" for s in states.values()):
        fail(f"{args.url}: {line}")
    print(f"{args.url}: {line}")
    return 0


def sticky(args):
    """Requests that carry the LB's cookie all reach one api-server (the X-Hactl-Backend header)."""
    import http.cookiejar
    import urllib.error
    import urllib.request

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    url = args.url.rstrip("/") + "/api/v2/monitor/health"
    backends = []
    try:
        for _ in range(args.requests + 1):
            with opener.open(url, timeout=10) as resp:
                backends.append(resp.headers.get("X-Hactl-Backend") or "?")
    except (urllib.error.URLError, OSError) as e:
        fail(f"{url}: {e}")
    cookies = sorted(c.name for c in jar)
    if not cookies:
        fail(f"{args.url} set no cookie")
    reached = sorted(set(backends[1:]))
    if len(reached) != 1 or reached == ["?"]:
        fail(f"{args.requests} requests with the cookie {','.join(cookies)} reached {', '.join(reached)}")
    print(f"{args.requests} requests with the cookie {','.join(cookies)} all reached {reached[0]}")
    return 0


def smoke(args):
    import urllib.error
    import urllib.parse

    base = args.url.rstrip("/")
    password = os.environ.get("HACTL_AIRFLOW_PASSWORD")
    if not password:
        fail("HACTL_AIRFLOW_PASSWORD is not set")
    deadline = time.monotonic() + args.timeout
    token, last = None, ""
    while token is None:
        try:
            _, answer = request("POST", base + "/auth/token", {"username": args.user, "password": password})
            token = answer["access_token"]
        except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
            last = str(e)
            if time.monotonic() > deadline:
                fail(f"no token from {base}/auth/token: {last}")
            time.sleep(2)
    dag = base + "/api/v2/dags/hactl_smoke"
    while True:  # the dag-processor parses the DAG after it is synced
        try:
            request("PATCH", dag, {"is_paused": False}, token)
            break
        except (urllib.error.URLError, OSError) as e:
            if time.monotonic() > deadline:
                fail(f"hactl_smoke is not known to {base}: {e}")
            time.sleep(2)
    started = time.monotonic()
    _, run = request("POST", dag + "/dagRuns", {"logical_date": None}, token)
    run_url = f"{dag}/dagRuns/{urllib.parse.quote(run['dag_run_id'], safe='')}"
    state = run.get("state")
    while state not in ("success", "failed"):
        if time.monotonic() > deadline:
            fail(f"hactl_smoke run {run['dag_run_id']} still {state} after {args.timeout} s")
        time.sleep(1)
        try:
            state = request("GET", run_url, token=token)[1]["state"]
        except (urllib.error.URLError, OSError) as e:
            last = str(e)  # an api-server going away mid-poll: the LB sends the next try elsewhere
    seconds = time.monotonic() - started
    _, tis = request("GET", run_url + "/taskInstances?limit=100", token=token)
    hosts = [short(ti.get("hostname")) for ti in tis["task_instances"] if ti["task_id"] == "record_host"]
    spread = ", ".join(f"{h} ({hosts.count(h)})" for h in sorted(set(hosts)))
    if state != "success":
        fail(f"hactl_smoke run {run['dag_run_id']} {state} after {seconds:.1f} s; tasks ran on {spread}")
    if len(set(hosts)) < args.min_workers:
        fail(f"hactl_smoke succeeded in {seconds:.1f} s but its tasks ran on {spread}: fewer than {args.min_workers} workers")
    print(f"hactl_smoke run {run['dag_run_id']} succeeded in {seconds:.1f} s; {len(hosts)} tasks ran on {spread}")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="check", required=True)
    p = sub.add_parser("jobs")
    p.add_argument("--masters", required=True)
    p.add_argument("--config", default="/etc/airflow/airflow.cfg")
    p.add_argument("--threshold", type=int, default=30)
    p.add_argument("--every", default="SchedulerJob,TriggererJob", help="job types live on exactly the masters")
    p.add_argument("--one", default="DagProcessorJob", help="job types live exactly once in the cluster")
    p = sub.add_parser("db")
    p.add_argument("--config", default="/etc/airflow/airflow.cfg")
    p = sub.add_parser("workers")
    p.add_argument("--expect", required=True)
    p.add_argument("--config", default="/etc/airflow/airflow.cfg")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the replies")
    p = sub.add_parser("health")
    p.add_argument("--url", required=True)
    p.add_argument("--ignore", default="", help="components not checked (the guard stage starts them)")
    p = sub.add_parser("sticky")
    p.add_argument("--url", required=True)
    p.add_argument("--requests", type=int, default=20)
    p = sub.add_parser("smoke")
    p.add_argument("--url", required=True)
    p.add_argument("--user", default="admin")
    p.add_argument("--min-workers", type=int, default=2)
    p.add_argument("--timeout", type=int, default=300)
    args = parser.parse_args()
    return {"db": db, "jobs": jobs, "workers": workers, "health": health, "sticky": sticky, "smoke": smoke}[args.check](args)


if __name__ == "__main__":
    sys.exit(main())
