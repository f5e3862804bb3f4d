"""hactl's smoke DAG: fans out over mapped tasks that each record the host (the Celery worker)
that ran them, then sums up the hosts. hactl's web-lb gate triggers it through the load balancer
and checks that at least two workers took part.

Shipped unpaused, so a run can be triggered as soon as the dag-processor has parsed it.
"""

from __future__ import annotations

import socket
import time

import pendulum

from airflow.sdk import dag, task

SHARDS = 8


@dag(
    dag_id="hactl_smoke",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    max_active_runs=4,
    tags=["hactl"],
    # A task whose hand-over to Celery fails (a broker node just crashed) is tried again.
    default_args={"retries": 5, "retry_delay": pendulum.duration(seconds=10)},
)
def hactl_smoke():
    @task
    def shards() -> list[int]:
        return list(range(SHARDS))

    @task
    def record_host(shard: int) -> str:
        # Long enough that the shards spread over the workers instead of queueing on one.
        time.sleep(3)
        return socket.gethostname()

    @task
    def summary(hosts: list[str]) -> dict[str, int]:
        hosts = list(hosts)
        return {h: hosts.count(h) for h in sorted(set(hosts))}

    summary(record_host.expand(shard=shards()))


hactl_smoke()
