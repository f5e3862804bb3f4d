#!/usr/bin/python3
# Managed by hactl (templates/guard/hactl-guard.py). {% raw %}
"""hactl-guard: keeps a systemd unit running on exactly one node of the cluster.

The nodes elect the unit's holder on etcd: a lease with a TTL, a key created under it only where
it does not exist yet (a transaction comparing its create revision with 0). The holder starts
the unit and renews the lease; every other node keeps the unit stopped and campaigns when the key
is gone. A holder that cannot prove within 60% of the TTL (on the monotonic clock) that its lease
is alive and the key still its own stops the unit, killing it if a normal stop hangs, before etcd
can expire the lease and let another node start one (self-fencing). The key's create revision is
the fencing token. Python's standard library and etcd's v3 JSON gateway only.

  hactl-guard run [UNIT...]         supervise the units (default: those listed in the units
                                    file, re-read when it changes); the hactl-guard service
                                    runs this
  hactl-guard status [UNIT...]      who holds each guarded unit, since when, the token, and
                                    whether it runs here; --check: exit 1 unless it runs here
                                    exactly when this node holds it
  hactl-guard release UNIT          on the holder: stop UNIT and give it up for maintenance;
                                    another node takes over; waits for that and says who
  hactl-guard stop-units [UNIT...]  stop the units now (SIGKILL when a normal stop hangs)

Configuration: /etc/hactl/guard.json {"node", "endpoints", "ttl", "prefix", "units_file", and
with https:// endpoints "tls": {"cacert", "cert", "key"}: the CA etcd's certificates are checked
against and the client certificate presented}; the units file (written by the stage that installs the units) lists one unit per line. A unit taken
off the list is given up without being stopped (it is no longer a singleton); one put on it is
supervised from the next round.
"""

import argparse
import base64
import datetime
import json
import os
import select
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

CONFIG = "/etc/hactl/guard.json"
MIN_TTL = 5
# Seconds between looks at the key while standing by; the holder's renewals are every TTL/10.
POLL = 1.0
# After a release, the releasing node waits this long before it campaigns again.
HOLD_OFF = 5.0
RUNNING = ("active", "activating", "reloading", "deactivating")


class ConfigError(Exception):
    """The configuration is unusable."""


class EtcdError(Exception):
    """etcd could not be asked (unreachable, no quorum, an error answer)."""


def log(message):
    print(message, flush=True)


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def b64(text):
    return base64.b64encode(text.encode()).decode()


def key_for(prefix, unit):
    """The unit's election key in etcd."""
    return f"{prefix.rstrip('/')}/{unit.name}"


def stop_grace(ttl):
    """How long a stop waits before SIGKILL, and then for the processes to go (see Guard)."""
    return ttl / 8


def load_config(path):
    """The configuration, checked: a TTL of at least MIN_TTL s and at least one endpoint."""
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: {e}")
    if not config.get("endpoints"):
        raise ConfigError(f"{path}: the etcd endpoint list is empty")
    if not isinstance(config.get("ttl"), (int, float)) or config["ttl"] < MIN_TTL:
        raise ConfigError(f"{path}: ttl {config.get('ttl')!r} is below {MIN_TTL} s")
    for key in ("node", "prefix", "units_file"):
        if not config.get(key):
            raise ConfigError(f"{path}: `{key}` is missing")
    return config


def tls_context(tls):
    """The TLS context for https:// endpoints: etcd's certificates checked against the CA, the
    client certificate presented (etcd admits only clients with one). None without `tls`."""
    if not tls:
        return None
    try:
        context = ssl.create_default_context(cafile=tls["cacert"])
        context.load_cert_chain(tls["cert"], tls["key"])
    except (KeyError, OSError, ssl.SSLError) as e:
        raise ConfigError(f"etcd TLS settings {sorted(tls)}: {e}")
    return context


class Etcd:
    """etcd's v3 JSON gateway over a list of endpoints, the last one that answered tried first."""

    def __init__(self, endpoints, timeout=1.0, tls=None):
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self.preferred = 0
        self.context = tls_context(tls)

    @classmethod
    def of(cls, config):
        """The client of guard.json's endpoints, with its `tls` settings where it has them."""
        return cls(config["endpoints"], tls=config.get("tls"))

    def call(self, path, body, deadline=None):
        """POSTs `body` to /v3/PATH on each endpoint in turn; each try ends by `deadline`."""
        last = "no endpoint"
        count = len(self.endpoints)
        for i in range(count):
            index = (self.preferred + i) % count
            timeout = self.timeout
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
                if timeout <= 0:
                    raise EtcdError(f"out of time ({last})")
            request = urllib.request.Request(
                f"{self.endpoints[index]}/v3/{path}",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=timeout, context=self.context) as response:
                    answer = json.load(response)
            except urllib.error.HTTPError as e:
                answer = self.error_answer(e)
                if answer is None:
                    last = f"{self.endpoints[index]}: HTTP {e.code}"
                    continue
            except (OSError, ValueError) as e:
                last = f"{self.endpoints[index]}: {e}"
                continue
            if isinstance(answer.get("error"), dict):
                answer = answer["error"]  # a stream's error: {"error": {"message", "code"…}}
            if "message" in answer and "header" not in answer and "result" not in answer:
                if "lease not found" in answer["message"]:
                    self.preferred = index
                    return {"TTL": "0"}
                last = f"{self.endpoints[index]}: {answer['message']}"
                continue
            self.preferred = index
            return answer.get("result", answer)
        raise EtcdError(last)

    @staticmethod
    def error_answer(e):
        try:
            return json.loads(e.read() or b"null")
        except ValueError:
            return None

    def grant(self, ttl):
        return int(self.call("lease/grant", {"TTL": int(ttl)})["ID"])

    def keepalive(self, lease, deadline=None):
        """The lease's remaining TTL after renewing it; 0 when it is gone."""
        return int(self.call("lease/keepalive", {"ID": str(lease)}, deadline).get("TTL", 0))

    def revoke(self, lease):
        self.call("lease/revoke", {"ID": str(lease)})

    def get(self, key, deadline=None):
        """The key's {node, since, create_revision, lease} (linearizable), or None."""
        kvs = self.call("kv/range", {"key": b64(key)}, deadline).get("kvs") or []
        if not kvs:
            return None
        kv = kvs[0]
        try:
            value = json.loads(base64.b64decode(kv.get("value", "")).decode() or "{}")
        except ValueError:
            value = {}
        return {
            "node": value.get("node", ""),
            "since": value.get("since", ""),
            "create_revision": int(kv.get("create_revision", 0)),
            "lease": int(kv.get("lease", 0)),
        }

    def create(self, key, value, lease):
        """Puts the key under the lease only if it does not exist; its create revision, or None."""
        answer = self.call(
            "kv/txn",
            {
                "compare": [{"key": b64(key), "result": "EQUAL", "target": "CREATE", "create_revision": "0"}],
                "success": [{"request_put": {"key": b64(key), "value": b64(value), "lease": str(lease)}}],
            },
        )
        if not answer.get("succeeded"):
            return None
        return int(answer["header"]["revision"])


class SystemdUnit:
    """A systemd unit, started and stopped through systemctl."""

    def __init__(self, name):
        self.name = name if "." in name else name + ".service"

    def systemctl(self, *args, timeout=5):
        return subprocess.run(
            ["systemctl", *args, "--", self.name], capture_output=True, text=True, timeout=timeout
        )

    def state(self):
        """ActiveState: active, inactive, failed, activating, deactivating…"""
        try:
            return self.systemctl("show", "-p", "ActiveState", "--value").stdout.strip() or "unknown"
        except subprocess.TimeoutExpired:
            return "unknown"

    def exists(self):
        out = self.systemctl("show", "-p", "LoadState", "--value").stdout.strip()
        return out not in ("", "not-found")

    def running(self):
        return self.state() in RUNNING

    def start(self):
        self.systemctl("start", "--no-block")

    def stop(self, grace):
        """Stops the unit; after `grace` s its processes get SIGKILL, and are gone `grace` s
        later at most. True when none is left."""
        self.systemctl("stop", "--no-block")
        if self.wait_stopped(grace):
            return True
        self.systemctl("kill", "--signal=SIGKILL")
        return self.wait_stopped(grace)

    def wait_stopped(self, seconds):
        end = time.monotonic() + seconds
        while True:
            if not self.running():
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(0.1)


class Guard:
    """One node's supervisor of one unit. `step` does one round and says how long to sleep."""

    def __init__(self, etcd, unit, node, ttl, prefix, still_guarded=lambda: True):
        self.etcd = etcd
        # Asked again just before a stray unit is stopped: a unit just taken off the units file
        # and started by hactl must not be stopped by a round that began before the change.
        self.still_guarded = still_guarded
        self.unit = unit
        self.node = node
        self.ttl = ttl
        self.key = key_for(prefix, unit)
        self.renew_failing = False
        self.renew_every = max(1.0, ttl / 10)
        # The lease lives on etcd at least TTL s after the last renewal that was sent. Fencing
        # starts at 60% of that and stops the unit within 2 x TTL/8 (SIGKILL after TTL/8), so
        # the unit is gone by 85% of the TTL.
        self.fence_after = ttl * 0.6
        self.stop_grace = stop_grace(ttl)
        self.role = "standby"
        self.lease = None
        self.token = None
        self.since = None
        self.renewed = None
        self.next_renewal = 0.0
        self.hold_until = 0.0
        self.failing_since = None

    # --- rounds -----------------------------------------------------------------------------

    def step(self):
        if self.role == "holder":
            return self.hold()
        if self.role == "fenced":
            return self.recover()
        return self.stand_by()

    def stand_by(self):
        try:
            kv = self.etcd.get(self.key)
        except EtcdError:
            kv = "unknown"
        if isinstance(kv, dict) and kv["node"] == self.node and self.adopt(kv):
            return 0
        if self.unit.running() and self.still_guarded():
            log(f"{self.unit.name} runs here but this node does not hold it: stopping it")
            self.unit.stop(self.stop_grace)
        if kv is None and time.monotonic() >= self.hold_until:
            self.campaign()
            if self.role == "holder":
                return 0
        return POLL

    def campaign(self):
        sent = time.monotonic()
        since = now_iso()
        try:
            lease = self.etcd.grant(self.ttl)
            token = self.etcd.create(self.key, json.dumps({"node": self.node, "since": since}), lease)
        except EtcdError:
            return  # a key created by a lost answer is found and adopted on the next round
        if token is None:
            self.revoke(lease)
            return
        self.become_holder(lease, token, sent, since)
        log(f"{self.unit.name}: this node holds it now (fencing token {token}); starting it")

    def adopt(self, kv):
        """This node's key from before (a restart of the supervisor): keep it if its lease lives."""
        sent = time.monotonic()
        try:
            if self.etcd.keepalive(kv["lease"]) <= 0:
                return False
        except EtcdError:
            return False
        self.become_holder(kv["lease"], kv["create_revision"], sent, kv["since"])
        log(f"{self.unit.name}: this node still holds it (fencing token {self.token})")
        return True

    def become_holder(self, lease, token, renewed, since):
        self.role = "holder"
        self.lease, self.token, self.since = lease, token, since
        self.renewed = renewed
        self.next_renewal = renewed + self.renew_every
        self.failing_since = None

    def hold(self):
        if time.monotonic() - self.renewed >= self.fence_after:
            self.fence(f"no renewal of the lease for {time.monotonic() - self.renewed:.1f} s")
            return 0
        if time.monotonic() >= self.next_renewal:
            self.renew()
            if self.role != "holder":
                return 0
        self.keep_running()
        until_renewal = self.next_renewal - time.monotonic()
        until_fence = self.renewed + self.fence_after - time.monotonic()
        return max(0.05, min(POLL, until_renewal, until_fence))

    def renew(self):
        """Renews the lease and checks the key is still this node's (by its token)."""
        sent = time.monotonic()
        deadline = self.renewed + self.fence_after
        try:
            ttl = self.etcd.keepalive(self.lease, deadline)
            kv = self.etcd.get(self.key, deadline) if ttl > 0 else None
        except EtcdError as e:
            if not self.renew_failing:
                log(f"{self.unit.name}: cannot renew the lease ({e}); trying again")
            self.renew_failing = True
            self.next_renewal = time.monotonic() + 0.5
            return
        self.renew_failing = False
        if ttl <= 0:
            self.fence("the lease expired")
        elif kv is None or kv["create_revision"] != self.token:
            self.fence("the key is no longer this node's")
        else:
            self.renewed = sent
            self.next_renewal = sent + self.renew_every

    def keep_running(self):
        state = self.unit.state()
        if state == "active":
            self.failing_since = None
            return
        if state in ("inactive", "failed"):
            if self.failing_since is None:
                self.failing_since = time.monotonic()
            elif time.monotonic() - self.failing_since > self.ttl:
                self.release(f"{self.unit.name} does not stay up here")
                return
            self.unit.start()

    def fence(self, why):
        log(f"{self.unit.name}: fencing ({why}): stopping it before the lease can expire")
        stopped = self.unit.stop(self.stop_grace)
        log(f"{self.unit.name}: {'stopped' if stopped else 'STILL RUNNING after SIGKILL'} (token {self.token})")
        self.role = "fenced"

    def recover(self):
        """After fencing: resume if the lease turns out alive and the key ours, else stand by."""
        if self.unit.running():
            self.unit.stop(self.stop_grace)
        sent = time.monotonic()
        try:
            ttl = self.etcd.keepalive(self.lease)
            kv = self.etcd.get(self.key) if ttl > 0 else None
        except EtcdError:
            return POLL
        if ttl > 0 and kv is not None and kv["create_revision"] == self.token:
            self.become_holder(self.lease, self.token, sent, self.since)
            log(f"{self.unit.name}: the lease is renewed again: still the holder (token {self.token})")
            return 0
        log(f"{self.unit.name}: the lease is gone: standing by")
        self.stand_down()
        return 0

    def release(self, why):
        """Stops the unit, gives the key up and stays out of the next campaign for a while."""
        if self.role == "standby":
            log(f"{self.unit.name}: release asked, but this node does not hold it")
            return
        log(f"{self.unit.name}: releasing ({why})")
        self.unit.stop(self.stop_grace)
        self.revoke(self.lease)
        self.stand_down()
        self.hold_until = time.monotonic() + HOLD_OFF

    def abandon(self):
        """The unit is no longer guarded: give the key up and leave the unit as it is."""
        if self.role != "standby":
            self.revoke(self.lease)
            log(f"{self.unit.name}: no longer guarded: key given up, the unit left as it is")
        self.stand_down()

    def stand_down(self):
        """Back to standing by, holding no lease."""
        self.role, self.lease, self.token = "standby", None, None

    def shut_down(self, revoke):
        """The supervisor stops: the unit stops with it; the key is given up when `revoke`."""
        if self.role != "standby" or self.unit.running():
            self.unit.stop(self.stop_grace)
        if revoke and self.lease is not None:
            self.revoke(self.lease)

    def revoke(self, lease):
        try:
            self.etcd.revoke(lease)
        except EtcdError:
            pass


# --- commands -------------------------------------------------------------------------------


RUN_DIR = "/run/hactl-guard"


def release_request(unit):
    return os.path.join(RUN_DIR, f"release-{unit.name}")


def listed_units(config):
    """The units file's units (one per line; # comments), and its version (inode, mtime)."""
    try:
        with open(config["units_file"]) as f:
            stat = os.fstat(f.fileno())
            version = (stat.st_ino, stat.st_mtime_ns)
            names = [line.split("#")[0].strip() for line in f]
    except FileNotFoundError:
        return [], None
    return [n for n in names if n], version


def units_of(config, names, make_unit=SystemdUnit):
    """The units asked for on the command line, else those the units file lists."""
    return [make_unit(n) for n in (names or listed_units(config)[0])]


class Supervisor:
    """Every guarded unit of this node, kept in step with the units file."""

    def __init__(self, config, names, make_unit=SystemdUnit):
        self.config = config
        self.names = names
        self.make_unit = make_unit
        self.etcd = Etcd.of(config)
        self.guards = {}
        self.seen = "never"

    def refresh(self):
        """Follows the units file (or the command line's units): new ones guarded, gone ones
        given up without a stop."""
        if self.names:
            names, version = self.names, "fixed"
        else:
            names, version = listed_units(self.config)
        if version == self.seen:
            return
        self.seen = version
        wanted = {u.name for u in units_of(self.config, names, self.make_unit)}
        for name in [n for n in self.guards if n not in wanted]:
            self.guards.pop(name).abandon()
        for name in sorted(wanted - set(self.guards)):
            unit = self.make_unit(name)
            if not unit.exists():
                log(f"guarded unit {unit.name} does not exist on this node: not supervised")
                continue
            c = self.config
            self.guards[name] = Guard(
                self.etcd, unit, c["node"], c["ttl"], c["prefix"], lambda name=name: self.listed(name)
            )
        node, ttl = self.config["node"], self.config["ttl"]
        log(f"supervising {', '.join(sorted(self.guards)) or 'nothing'} as {node} (ttl {ttl} s)")

    def listed(self, name):
        """Whether the unit is guarded now (the units file read afresh)."""
        return name in {u.name for u in units_of(self.config, self.names, self.make_unit)}

    def round(self):
        """One round of every guard; the seconds until the next."""
        self.refresh()
        pause = POLL
        for g in self.guards.values():
            if os.path.exists(release_request(g.unit)):
                os.unlink(release_request(g.unit))
                g.release("asked to")
            pause = min(pause, g.step())
        return pause


def run(config, names):
    """Supervises the units until SIGTERM."""
    supervisor = Supervisor(config, names)
    os.makedirs(RUN_DIR, exist_ok=True)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    signal.signal(signal.SIGUSR1, lambda *_: None)  # `release` asks; the wake-up pipe wakes us
    while not stopping:
        pause = supervisor.round()
        if pause > 0 and not stopping:
            ready, _, _ = select.select([wake_r], [], [], pause)
            if ready:
                os.read(wake_r, 64)
    state = subprocess.run(["systemctl", "is-system-running"], capture_output=True, text=True).stdout
    shutting_down = state.strip() == "stopping"
    for g in supervisor.guards.values():
        g.shut_down(revoke=shutting_down)
    log("supervisor stopped, its units with it" + ("; the node shuts down: keys given up" if shutting_down else ""))
    return 0


def status(config, names, check):
    """One line: who holds each unit, since when, its token, whether it runs here."""
    etcd = Etcd.of(config)
    ok = True
    lines = []
    units = units_of(config, names)
    if not units:
        lines.append(f"no guarded unit listed in {config['units_file']}")
        ok = False
    for unit in units:
        try:
            kv = etcd.get(key_for(config['prefix'], unit))
        except EtcdError as e:
            lines.append(f"{unit.name}: etcd cannot say who holds it ({e})")
            ok = False
            continue
        here = unit.running()
        where = "runs here" if here else "not running here"
        if kv is None:
            lines.append(f"{unit.name}: held by no node; {where}")
            ok = False
            continue
        lines.append(f"{unit.name}: held by {kv['node']} since {kv['since']}, token {kv['create_revision']}; {where}")
        ok = ok and (kv["node"] == config["node"]) == here
    print("; ".join(lines))
    return 0 if ok or not check else 1


def release(config, name, wait):
    """Asks this node's supervisor to give the unit up; waits for another holder and names it."""
    unit = SystemdUnit(name)
    etcd = Etcd.of(config)
    kv = etcd.get(key_for(config['prefix'], unit))
    if kv is None or kv["node"] != config["node"]:
        holder = kv["node"] if kv else "no node"
        print(f"{unit.name} is held by {holder}, not by this node ({config['node']}): run this on the holder")
        return 1
    started = time.monotonic()
    with open(release_request(unit), "w"):
        pass
    asked = subprocess.run(
        ["systemctl", "kill", "--kill-who=main", "--signal=SIGUSR1", "hactl-guard.service"],
        capture_output=True,
        text=True,
    )
    if asked.returncode != 0:
        os.unlink(release_request(unit))
        print(f"the supervisor (hactl-guard.service) cannot be asked: {asked.stderr.strip()}")
        return 1
    while time.monotonic() - started < wait:
        time.sleep(0.2)
        try:
            now = etcd.get(key_for(config['prefix'], unit))
        except EtcdError:
            continue
        if now is not None and now["create_revision"] != kv["create_revision"]:
            print(
                f"{unit.name}: released by {kv['node']}, held by {now['node']} "
                f"{time.monotonic() - started:.1f} s later (token {now['create_revision']})"
            )
            return 0
    print(f"{unit.name}: released by {kv['node']}, but no node took it within {wait:.0f} s")
    return 1


def stop_units(config, names):
    """Stops the units now (the supervisor's ExecStopPost: none may run unsupervised)."""
    stopped = [unit.stop(stop_grace(config["ttl"])) for unit in units_of(config, names)]
    return 0 if all(stopped) else 1


def main(argv=None):
    parser = argparse.ArgumentParser(prog="hactl-guard", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=CONFIG)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run").add_argument("units", nargs="*")
    p = sub.add_parser("status")
    p.add_argument("units", nargs="*")
    p.add_argument("--check", action="store_true")
    p = sub.add_parser("release")
    p.add_argument("unit")
    p.add_argument("--wait", type=float, default=60.0)
    sub.add_parser("stop-units").add_argument("units", nargs="*")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if args.command == "run":
            return run(config, args.units)
        if args.command == "status":
            return status(config, args.units, args.check)
        if args.command == "release":
            return release(config, args.unit, args.wait)
        return stop_units(config, args.units)
    except (ConfigError, EtcdError) as e:
        print(f"hactl-guard: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
# {% endraw %}
