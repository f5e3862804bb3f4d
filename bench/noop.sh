#!/usr/bin/env bash
# Benchmark: no-op re-run of a playbook of 4 packages present, 2 services running and enabled, a
# directory, and 15 directories, 15 files and 15 lines on the lab's nodes. Prints the median wall
# time of RUNS re-runs and the SSH round trips per host.
# With COMPARE=1 it also times Ansible (ansible-core) and pyinfra on the same steps, installed
# into a venv from PyPI. HACTL=/path/to/hactl times that binary instead of a fresh release build
# (to compare two versions on the same workload). Needs root and a lab (`hactl lab up`); targets
# only lab node addresses (the packages come from the lab's own apt source and package pool).
# hactl's first run installs the packages; the other tools' first runs then change nothing.
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
# python3-apt: Ansible's apt module needs it on the target (it would install it itself otherwise).
PACKAGES="python3-apt, jq, socat, cron"
SERVICES="cron ssh"

{
  echo "stages:"
  echo "  - name: bench"
  echo "    hosts: all"
  echo "    steps:"
  echo "      - {name: packages, package: {name: [$PACKAGES]}}"
  for unit in $SERVICES; do
    echo "      - {name: $unit running, service: {name: $unit, state: started, enabled: true}}"
  done
  echo "      - {name: base, directory: {path: /srv/bench}}"
  for i in $(seq 1 15); do
    echo "      - {name: dir$i, directory: {path: /srv/bench/d$i, mode: \"0755\"}}"
    printf '%s\n' "      - {name: file$i, file: {path: /srv/bench/d$i/f.conf, content: \"key$i=value$i\\n\", mode: \"0644\"}}"
    echo "      - {name: line$i, lineinfile: {path: /srv/bench/lines.conf, line: \"opt$i=on\", create: true}}"
  done
} > "$work/bench.yml"
# Ansible's PLAY RECAP as "changed=N" per host.
recap_changed() {
  awk '/PLAY RECAP/ { on = 1; next } on && /changed=/ { for (i = 1; i <= NF; i++) if ($i ~ /^changed=/) printf "%s %s ", $1, $i }'
}
# hactl's changed steps on a re-run (0 when the other tools left everything as hactl wants it).
hactl_changed() {
  "$hactl" provision "$work/inventory.yml" -p "$work/bench.yml" --output json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["changed"])'
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
time_runs() { # command...
  for _ in $(seq 1 "$RUNS"); do
    s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
    echo "$e - $s" | bc -l
  done | median
}

if ! $hactl provision "$work/inventory.yml" -p "$work/bench.yml" >"$work/first.log" 2>&1; then
  tail -30 "$work/first.log"
  exit 1
fi
steps=$(grep -c '{name:' "$work/bench.yml")
# Each tool's first run must leave nothing for the others: their first runs are counted below.
changed=$(hactl_changed)
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
    echo "    - {name: packages, apt: {name: [$PACKAGES], state: present}}"
    for unit in $SERVICES; do
      echo "    - {name: $unit running, systemd: {name: $unit, state: started, enabled: true}}"
    done
    echo "    - {name: base, file: {path: /srv/bench, state: directory}}"
    for i in $(seq 1 15); do
      echo "    - {name: dir$i, file: {path: /srv/bench/d$i, state: directory, mode: '0755'}}"
      printf '%s\n' "    - {name: file$i, copy: {dest: /srv/bench/d$i/f.conf, content: \"key$i=value$i\\n\", mode: '0644'}}"
      echo "    - {name: line$i, lineinfile: {path: /srv/bench/lines.conf, line: 'opt$i=on', create: true}}"
    done
  } > "$work/site.yml"
  export ANSIBLE_PYTHON_INTERPRETER=auto_silent ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_SSH_ARGS="-o UserKnownHostsFile=$kh -o ControlMaster=auto -o ControlPersist=60s"
  # Ansible's first run after hactl's: its recap must say changed=0 on every host.
  first=$("$work/venv/bin/ansible-playbook" -i "$work/hosts.ini" "$work/site.yml")
  echo "ansible-core's first run after hactl's: $(recap_changed <<<"$first")"
  ansible_s=$(time_runs "$work/venv/bin/ansible-playbook" -i "$work/hosts.ini" "$work/site.yml")
  echo "ansible-core: no-op re-run median ${ansible_s}s ($(echo "$ansible_s / $hactl_s" | bc -l | cut -c1-6)x hactl)"
  {
    echo "from pyinfra.operations import apt, files, systemd"
    echo "apt.packages(name='packages', packages='$PACKAGES'.split(', '))"
    for unit in $SERVICES; do
      echo "systemd.service(name='$unit running', service='$unit', running=True, enabled=True)"
    done
    echo "files.directory(name='base', path='/srv/bench')"
    for i in $(seq 1 15); do
      echo "files.directory(name='dir$i', path='/srv/bench/d$i', mode='755')"
      printf '%s\n' "files.put(name='file$i', src=__import__('io').StringIO('key$i=value$i\\n'), dest='/srv/bench/d$i/f.conf', mode='644')"
      echo "files.line(name='line$i', path='/srv/bench/lines.conf', line='opt$i=on')"
    done
  } > "$work/deploy.py"
  printf 'hosts = [(f"10.213.0.1{n}", {"ssh_user": "root", "ssh_key": "%s", "ssh_known_hosts_file": "%s"}) for n in (1, 2, 3)]\n' "$key" "$kh" > "$work/inventory.py"
  (cd "$work" && venv/bin/pyinfra -y inventory.py deploy.py >/dev/null 2>&1) || echo "pyinfra: first run failed (see: cd $work && venv/bin/pyinfra -y inventory.py deploy.py)"
  echo "pyinfra's first run after the others: $(cd "$work" && venv/bin/pyinfra -y inventory.py deploy.py 2>&1 | grep -iE '^ *\[[^]]*\] (no changes|changed|success)' | tr -s ' \n' ' ')"
  echo "hactl after both tools' runs: changed=$(hactl_changed)"
  echo "ansible-core's re-run: $("$work/venv/bin/ansible-playbook" -i "$work/hosts.ini" "$work/site.yml" | recap_changed)"
  pyinfra_s=$(cd "$work" && time_runs venv/bin/pyinfra -y inventory.py deploy.py)
  echo "pyinfra: no-op re-run median ${pyinfra_s}s ($(echo "$pyinfra_s / $hactl_s" | bc -l | cut -c1-6)x hactl)"
fi
