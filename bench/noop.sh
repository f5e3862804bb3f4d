#!/usr/bin/env bash
# Benchmark: no-op re-run of a 45-step playbook (15 directories, 15 files, 15 lines) on the lab's
# nodes. Prints the median wall time of RUNS re-runs and the SSH round trips per host.
# With COMPARE=1 it also times Ansible (ansible-core) and pyinfra on the same steps, installed
# into a venv from PyPI. HACTL=/path/to/hactl times that binary instead of a fresh release build
# (to compare two versions on the same workload). Needs root and a lab (`hactl lab up`); targets
# only lab node addresses.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
RUNS=${RUNS:-10}
if [ -z "${HACTL:-}" ]; then
  cargo build --release -q
fi
hactl=${HACTL:-$PWD/target/release/hactl}
$hactl lab up --nodes 3 >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp /var/lib/hactl/lab/inventory.yml "$work/inventory.yml"

{
  echo "stages:"
  echo "  - name: bench"
  echo "    hosts: all"
  echo "    steps:"
  echo "      - {name: base, directory: {path: /srv/bench}}"
  for i in $(seq 1 15); do
    echo "      - {name: dir$i, directory: {path: /srv/bench/d$i, mode: \"0755\"}}"
    printf '%s\n' "      - {name: file$i, file: {path: /srv/bench/d$i/f.conf, content: \"key$i=value$i\\n\", mode: \"0644\"}}"
    echo "      - {name: line$i, lineinfile: {path: /srv/bench/lines.conf, line: \"opt$i=on\", create: true}}"
  done
} > "$work/bench.yml"
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
time_runs() { # command...
  for _ in $(seq 1 "$RUNS"); do
    s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
    echo "$e - $s" | bc -l
  done | median
}

$hactl provision "$work/inventory.yml" -p "$work/bench.yml" >/dev/null 2>&1
steps=$(grep -c '{name:' "$work/bench.yml")
changed=$($hactl provision "$work/inventory.yml" -p "$work/bench.yml" --output json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["changed"])')
trips=$($hactl provision "$work/inventory.yml" -p "$work/bench.yml" --output json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin)["stats"]["round_trips"]; print(" ".join(f"{h}={n}" for h,n in sorted(d.items())))')
hactl_s=$(time_runs "$hactl" provision "$work/inventory.yml" -p "$work/bench.yml")
echo "hactl: $steps steps x 3 hosts, no-op re-run median ${hactl_s}s over $RUNS runs (changed=$changed), round trips per host: $trips"

if [ "${COMPARE:-0}" = 1 ]; then
  python3 -m venv "$work/venv" && "$work/venv/bin/pip" install -q ansible-core pyinfra
  key=/var/lib/hactl/lab/ssh/id_ed25519; kh=/var/lib/hactl/lab/ssh/known_hosts
  printf '[all]\n' > "$work/hosts.ini"
  for n in 1 2 3; do echo "node$n ansible_host=10.213.0.1$n ansible_user=root ansible_ssh_private_key_file=$key" >> "$work/hosts.ini"; done
  {
    echo "- hosts: all"; echo "  gather_facts: false"; echo "  tasks:"
    echo "    - {name: base, file: {path: /srv/bench, state: directory}}"
    for i in $(seq 1 15); do
      echo "    - {name: dir$i, file: {path: /srv/bench/d$i, state: directory, mode: '0755'}}"
      printf '%s\n' "    - {name: file$i, copy: {dest: /srv/bench/d$i/f.conf, content: \"key$i=value$i\\n\", mode: '0644'}}"
      echo "    - {name: line$i, lineinfile: {path: /srv/bench/lines.conf, line: 'opt$i=on', create: true}}"
    done
  } > "$work/site.yml"
  export ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_SSH_ARGS="-o UserKnownHostsFile=$kh -o ControlMaster=auto -o ControlPersist=60s"
  "$work/venv/bin/ansible-playbook" -i "$work/hosts.ini" "$work/site.yml" >/dev/null
  ansible_s=$(time_runs "$work/venv/bin/ansible-playbook" -i "$work/hosts.ini" "$work/site.yml")
  echo "ansible-core: no-op re-run median ${ansible_s}s ($(echo "$ansible_s / $hactl_s" | bc -l | cut -c1-6)x hactl)"
  {
    echo "from pyinfra.operations import files"
    echo "files.directory(name='base', path='/srv/bench')"
    for i in $(seq 1 15); do
      echo "files.directory(name='dir$i', path='/srv/bench/d$i', mode='755')"
      printf '%s\n' "files.put(name='file$i', src=__import__('io').StringIO('key$i=value$i\\n'), dest='/srv/bench/d$i/f.conf', mode='644')"
      echo "files.line(name='line$i', path='/srv/bench/lines.conf', line='opt$i=on')"
    done
  } > "$work/deploy.py"
  printf 'hosts = [(f"10.213.0.1{n}", {"ssh_user": "root", "ssh_key": "%s", "ssh_known_hosts_file": "%s"}) for n in (1, 2, 3)]\n' "$key" "$kh" > "$work/inventory.py"
  (cd "$work" && venv/bin/pyinfra -y inventory.py deploy.py >/dev/null 2>&1) || echo "pyinfra: first run failed (see: cd $work && venv/bin/pyinfra -y inventory.py deploy.py)"
  pyinfra_s=$(cd "$work" && time_runs venv/bin/pyinfra -y inventory.py deploy.py)
  echo "pyinfra: no-op re-run median ${pyinfra_s}s ($(echo "$pyinfra_s / $hactl_s" | bc -l | cut -c1-6)x hactl)"
fi
