# `airflow_db`'s probe, run by the venv's interpreter: the head revision of the installed
# airflow's migrations (read from the files, without importing airflow), then the revision the
# metadata database is at (through HACTL_DB_URL, the URL airflow.cfg's sql_alchemy_conn holds):
# `schema known` and `current REV|-`, or `schema unknown` and `reason WHY` (psycopg2's first
# line: which host and address, and what answered; never the URL).
import glob
import os
import re
import sysconfig

versions = os.path.join(sysconfig.get_paths()["purelib"], "airflow", "migrations", "versions")
revisions, parents = set(), set()
for path in glob.glob(os.path.join(versions, "*.py")):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    found = re.search(r'^revision\s*=\s*"(\w+)"', text, re.M)
    if found:
        revisions.add(found.group(1))
    for line in re.findall(r"^down_revision\s*=\s*(.+)$", text, re.M):
        parents.update(re.findall(r'"(\w+)"', line))
print("head", ",".join(sorted(revisions - parents)) or "-")
print("version", dist_version("apache-airflow-core") or "-")  # dist_version.py, prepended
url = re.sub(r"^postgresql\+\w+://", "postgresql://", os.environ["HACTL_DB_URL"])
try:
    import psycopg2

    with psycopg2.connect(url, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("select to_regclass('alembic_version') is not null")
        current = "-"
        if cur.fetchone()[0]:
            cur.execute("select version_num from alembic_version")
            current = ",".join(sorted(r[0] for r in cur.fetchall())) or "-"
except Exception as e:  # the reason only: never the connection string
    print("schema unknown")
    print("reason", (str(e).strip().splitlines() or [type(e).__name__])[0])
else:
    print("schema known")
    print("current", current)
