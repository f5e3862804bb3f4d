# shellcheck shell=sh
# hactl_smoke triggered through the LB with the admin login succeeds, its tasks on at least two
# workers (every worker, where fewer).
# HACTL_AIRFLOW_PASSWORD: the admin's password (airflow_check.py reads it from the
# environment); HACTL_URL: the web LB; HACTL_MIN_WORKERS: the workers the tasks must reach.
python3 /usr/local/lib/hactl/airflow_check.py smoke --url "$HACTL_URL" --min-workers "$HACTL_MIN_WORKERS"
