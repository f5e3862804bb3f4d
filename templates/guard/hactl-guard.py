#!/usr/bin/python3
# Managed by hactl (templates/guard/hactl-guard.py). {% raw %}
"""hactl-guard: keeps a systemd unit running on exactly one node of the cluster.

The nodes elect the unit's holder on etcd: a lease with a TTL, a key created under it only where
it does not exist yet (a transaction comparing its create revision with 0). The holder starts
the unit and renews the lease; every other node keeps the unit stopped and campaigns when the key
is gone. A holder that cannot prove within 60% of the TTL (on the monotonic clock) that its lease
is alive and the key still its own stops the unit, killing it if a normal stop hangs, before etcd
can expire the lease and let another node start one (self-fencing). The key's create revision is
the fencing token. Each unit has its own thread, so any number of units are fenced at once;
every etcd and systemctl call has a deadline inside the TTL's budget (see Guard). Anything
unexpected stops every guarded unit and ends the supervisor with status 1 (systemd restarts it).
The TLS files are read again when they change: a renewed certificate needs no restart. Python's
standard library and etcd's v3 JSON gateway only.

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
against and the client certificate presented}; the units file (written by the stage that
installs the units) lists one unit per line. A unit taken off the list is given up without being stopped (it is no longer a singleton); one put on it is
supervised from the next round.
"""

import argparse
import base64
import datetime
import http.client
import json
import os
import queue
import select
import signal
import ssl
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request

CONFIG = "/etc/hactl/guard.json"
MIN_TTL = 5
# Seconds between looks at the key while standing by; the holder's renewals are every TTL/10.
POLL = 1.0
# After a release, the releasing node waits this long before it campaigns again.
HOLD_OFF = 5.0
RUNNING = ("active", "activating", "reloading", "deactivating")
# The command that drives systemd (tests put a fake in its place).
SYSTEMCTL = ("systemctl",)
# Deadlines. Every systemctl call is killed after SYSTEMCTL_TIMEOUT s, or sooner where its caller
# must be done (a stop's phase, the fencing moment); every etcd HTTP try ends after
# HTTP_TIMEOUT s, or sooner where its caller must be done (see Guard for the TTL's budget).
SYSTEMCTL_TIMEOUT = 2.0
HTTP_TIMEOUT = 1.0


class ConfigError(Exception):
    """The configuration is unusable."""


class EtcdError(Exception):
    """etcd could not be asked (unreachable, no quorum, an error answer)."""


class GuardFailure(Exception):
    """A guard's thread failed or is stuck: the supervisor fences everything and exits."""


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
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: not a JSON object")
    if not config.get("endpoints"):
        raise ConfigError(f"{path}: the etcd endpoint list is empty")
    if not isinstance(config.get("ttl"), (int, float)) or config["ttl"] < MIN_TTL:
        raise ConfigError(f"{path}: ttl {config.get('ttl')!r} is below {MIN_TTL} s")
    for key in ("node", "prefix", "units_file"):
        if not config.get(key):
            raise ConfigError(f"{path}: `{key}` is missing")
    return config


def tls_version(tls):
    """The TLS files' identity (inode, mtime, size of each): a renewed file changes it."""
    version = []
    for name in ("cacert", "cert", "key"):
        st = os.stat(tls[name])
        version.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(version)


def tls_context(tls):
    """The TLS context for https:// endpoints and the files' version it was made from: etcd's
    certificates checked against the CA, the client certificate presented (etcd admits only
    clients with one)."""
    try:
        version = tls_version(tls)  # before reading: a file replaced meanwhile is read again
        context = ssl.create_default_context(cafile=tls["cacert"])
        context.load_cert_chain(tls["cert"], tls["key"])
    except (KeyError, OSError, ssl.SSLError) as e:
        raise ConfigError(f"etcd TLS settings {sorted(tls)}: {e}")
    return context, version


class Etcd:
    """etcd's v3 JSON gateway over a list of endpoints, the last one that answered tried first.
    Thread-safe: each guard's thread shares the one client."""

    def __init__(self, endpoints, timeout=HTTP_TIMEOUT, tls=None):
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self.preferred = 0
        self.tls = tls
        self.lock = threading.Lock()
        self.context, self.tls_seen, self.tls_bad = None, None, None
        if tls:
            self.context, self.tls_seen = tls_context(tls)

    @classmethod
    def of(cls, config):
        """The client of guard.json's endpoints, with its `tls` settings where it has them."""
        return cls(config["endpoints"], tls=config.get("tls"))

    def current_context(self):
        """The TLS context, made afresh when a TLS file changed, so a renewed certificate is used
        from the next call on without a restart. While the new files do not load together (a
        certificate and its key are renamed into place one after the other), the last good one."""
        if not self.tls:
            return self.context
        with self.lock:
            try:
                version = tls_version(self.tls)
            except OSError:
                return self.context
            if version in (self.tls_seen, self.tls_bad):
                return self.context
            try:
                self.context, self.tls_seen = tls_context(self.tls)
                log("etcd TLS files changed: the new certificate is used")
            except ConfigError as e:
                self.tls_bad = version
                log(f"etcd TLS files changed but do not load ({e}): the previous ones are used")
            return self.context

    def call(self, path, body, deadline=None):
        """POSTs `body` to /v3/PATH on each endpoint in turn; each try ends after self.timeout s
        and by `deadline` (monotonic) whatever the endpoint does."""
        last = "no endpoint"
        count = len(self.endpoints)
        data = json.dumps(body).encode()
        for i in range(count):
            index = (self.preferred + i) % count
            timeout = self.timeout
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                raise EtcdError(f"out of time ({last})")
            try:
                answer = self.post(f"{self.endpoints[index]}/v3/{path}", data, timeout)
            except EtcdError as e:
                last = f"{self.endpoints[index]}: {e}"
                continue
            if isinstance(answer.get("error"), dict):
                answer = answer["error"]  # a stream's error: {"error": {"message", "code"…}}
            if "message" in answer and "header" not in answer and "result" not in answer:
                if "lease not found" in str(answer["message"]):
                    self.preferred = index
                    return {"TTL": "0"}
                last = f"{self.endpoints[index]}: {answer['message']}"
                continue
            self.preferred = index
            answer = answer.get("result", answer)
            if not isinstance(answer, dict):
                raise EtcdError(f"{self.endpoints[index]}: an answer that is not a JSON object")
            return answer
        raise EtcdError(last)

    def post(self, url, data, timeout):
        """One POST's JSON object, over within `timeout` s: urllib's timeout bounds each socket
        operation, not the call (a slow TLS handshake, a server that trickles bytes), so the
        request runs in a thread that is given up at the deadline (it ends at its socket
        timeout). An unexpected exception is raised as it is."""
        outcome = {}

        def fetch():
            try:
                outcome["answer"] = self.fetch(url, data, timeout)
            except BaseException as e:  # handed to the caller
                outcome["error"] = e

        thread = threading.Thread(target=fetch, name="etcd-call", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            raise EtcdError(f"no answer within {timeout:.2f} s")
        error = outcome.get("error")
        if isinstance(error, (OSError, ValueError, http.client.HTTPException)):
            raise EtcdError(f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        return outcome["answer"]

    def fetch(self, url, data, timeout):
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self.current_context()) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as e:
            answer = self.error_answer(e)
            if answer is None:
                raise EtcdError(f"HTTP {e.code}")
        if not isinstance(answer, dict):
            raise EtcdError("an answer that is not a JSON object")
        return answer

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
        if not isinstance(value, dict):
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
    """A systemd unit, started and stopped through systemctl; every call has a deadline."""

    def __init__(self, name):
        self.name = name if "." in name else name + ".service"

    def systemctl(self, *args, deadline=None):
        """The output of `systemctl ARGS -- UNIT`, killed after SYSTEMCTL_TIMEOUT s or at
        `deadline` (monotonic); None when it did not end in time."""
        timeout = SYSTEMCTL_TIMEOUT
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
        if timeout < 0.05:
            return None
        try:
            done = subprocess.run(
                [*SYSTEMCTL, *args, "--", self.name], capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            log(f"{self.name}: `systemctl {args[0]}` gave no answer within {timeout:.2f} s")
            return None
        return done.stdout

    def state(self, deadline=None):
        """ActiveState (active, inactive, failed, activating, deactivating…), `unknown` when
        systemctl does not say in time."""
        return (self.systemctl("show", "-p", "ActiveState", "--value", deadline=deadline) or "").strip() or "unknown"

    def exists(self):
        """False only when systemd says the unit is not found (unsure: supervised)."""
        out = self.systemctl("show", "-p", "LoadState", "--value")
        return out is None or out.strip() not in ("", "not-found")

    def running(self, deadline=None):
        return self.state(deadline) in RUNNING

    def stopped(self, deadline=None):
        """Known to run no process (`unknown` is not stopped)."""
        return self.state(deadline) not in RUNNING + ("unknown",)

    def start(self, deadline=None):
        self.systemctl("start", "--no-block", deadline=deadline)

    def stop(self, grace):
        """Stops the unit; what is left after `grace` s gets SIGKILL, and is waited for `grace` s
        more. Every systemctl call ends with its phase: this returns within 2 x grace. True when
        nothing is left."""
        end = time.monotonic() + grace
        self.systemctl("stop", "--no-block", deadline=end)
        if self.wait_stopped(end):
            return True
        end += grace
        self.systemctl("kill", "--signal=SIGKILL", deadline=end)
        return self.wait_stopped(end)

    def wait_stopped(self, end):
        while True:
            if self.stopped(deadline=end):
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(max(0.0, min(0.1, end - time.monotonic())))


def stop_all(units, grace):
    """Stops every unit at once, one thread each: all are stopped (or SIGKILLed and waited for)
    within 2 x grace however many there are. True when none is left."""
    stopped = {}

    def stop(unit):
        try:
            stopped[unit.name] = unit.stop(grace)
        except Exception as e:
            log(f"{unit.name}: the stop failed: {e!r}")

    threads = [threading.Thread(target=stop, args=(u,), name=f"stop {u.name}", daemon=True) for u in units]
    for thread in threads:
        thread.start()
    end = time.monotonic() + 2 * grace + 0.5
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    return len(stopped) == len(units) and all(stopped.values())


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
        # The TTL's budget, counted from the moment the last successful renewal was sent (t=0;
        # the lease lives on etcd at least TTL s after etcd received it, later than t=0):
        # - every etcd call of a renewal (keepalive, then the key's read) ends by the fencing
        #   moment F = 0.6 x TTL: each HTTP try by min(HTTP_TIMEOUT, F - now), enforced on a
        #   thread (Etcd.post), so a hanging endpoint cannot hold the round past F;
        # - the holder's systemctl calls between renewals (state, start) end by F as well;
        # - at F the unit is stopped: `systemctl stop` and state polls all end by F + TTL/8,
        #   then `systemctl kill -s KILL` and polls by F + 2 x TTL/8 = 0.85 x TTL;
        # - each unit has its own thread (Worker): N units fence at once, each on its own
        #   lease's clock, never one after another;
        # - a thread that fails or is late (holder past F + TTL/20) makes the supervisor stop
        #   every unit at once (stop_all, 2 x TTL/8) and exit: done by 0.9 x TTL.
        # The 10-15% left covers clock rates, scheduling and reaping a killed systemctl.
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
        self.lease, self.token, self.since = lease, token, since
        self.renewed = renewed
        self.next_renewal = renewed + self.renew_every
        self.failing_since = None
        self.role = "holder"  # last: the supervisor's watchdog reads `renewed` of a holder

    def hold(self):
        if time.monotonic() - self.renewed >= self.fence_after:
            self.fence(f"no renewal of the lease for {time.monotonic() - self.renewed:.1f} s")
            return 0
        if time.monotonic() >= self.next_renewal:
            self.renew()
            if self.role != "holder":
                return 0
        self.keep_running(self.renewed + self.fence_after)
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

    def keep_running(self, deadline):
        """Starts the unit where it is down; every systemctl call over by `deadline`."""
        state = self.unit.state(deadline)
        if state == "active":
            self.failing_since = None
            return
        if state in ("inactive", "failed"):
            if self.failing_since is None:
                self.failing_since = time.monotonic()
            elif time.monotonic() - self.failing_since > self.ttl:
                self.release(f"{self.unit.name} does not stay up here")
                return
            self.unit.start(deadline)

    def fence(self, why):
        log(f"{self.unit.name}: fencing ({why}): stopping it before the lease can expire")
        self.role = "fencing"
        stopped = self.unit.stop(self.stop_grace)
        log(f"{self.unit.name}: {'stopped' if stopped else 'STILL RUNNING after SIGKILL'} (token {self.token})")
        self.role = "fenced"

    def recover(self):
        """After fencing: resume if the lease turns out alive and the key ours, else stand by."""
        if not self.unit.stopped():
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
        self.role = "fencing"
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
        if self.role != "standby" or not self.unit.stopped():
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


class Worker:
    """One guard's own thread: its rounds never wait for another unit's etcd calls or stops, so
    every held unit is fenced on its own lease's clock, all at once when etcd goes away."""

    def __init__(self, guard, failed=lambda: None):
        self.guard = guard
        self.failed = failed  # called from the thread when a round raised
        self.error = None
        self.requests = queue.SimpleQueue()
        self.wake = threading.Event()
        self.halted = threading.Event()
        self.thread = threading.Thread(target=self.loop, name=guard.unit.name, daemon=True)
        self.thread.start()

    def ask(self, what, arg=None):
        """After its round, the thread does `release` (arg: why), or `abandon` or `shut_down`
        (arg: revoke) and ends."""
        self.requests.put((what, arg))
        self.wake.set()

    def halt(self):
        """No more rounds (the supervisor fences everything itself)."""
        self.halted.set()
        self.wake.set()

    def loop(self):
        try:
            while not self.halted.is_set():
                self.wake.clear()
                while not self.requests.empty():
                    what, arg = self.requests.get()
                    if what == "release":
                        self.guard.release(arg)
                        continue
                    if what == "abandon":
                        self.guard.abandon()
                    else:
                        self.guard.shut_down(arg)
                    return
                self.wake.wait(self.guard.step())
        except BaseException:  # anything: the supervisor fences and exits
            self.error = traceback.format_exc()
            self.failed()


class Supervisor:
    """Every guarded unit of this node, kept in step with the units file, each in its thread."""

    def __init__(self, config, names, make_unit=SystemdUnit, wake=lambda: None):
        self.config = config
        self.names = names
        self.make_unit = make_unit
        self.wake = wake  # wakes the main loop (a thread failed)
        self.etcd = Etcd.of(config)
        self.workers = {}
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
        for name in [n for n in self.workers if n not in wanted]:
            self.workers.pop(name).ask("abandon")
        for name in sorted(wanted - set(self.workers)):
            unit = self.make_unit(name)
            if not unit.exists():
                log(f"guarded unit {unit.name} does not exist on this node: not supervised")
                continue
            c = self.config
            guard = Guard(self.etcd, unit, c["node"], c["ttl"], c["prefix"], lambda name=name: self.listed(name))
            self.workers[name] = Worker(guard, self.wake)
        node, ttl = self.config["node"], self.config["ttl"]
        log(f"supervising {', '.join(sorted(self.workers)) or 'nothing'} as {node} (ttl {ttl} s)")

    def listed(self, name):
        """Whether the unit is guarded now (the units file read afresh)."""
        return name in {u.name for u in units_of(self.config, self.names, self.make_unit)}

    def round(self):
        """Follows the units file, hands release requests to the threads and checks them; the
        seconds until the next round. GuardFailure when a thread failed or is stuck."""
        self.refresh()
        for worker in self.workers.values():
            if os.path.exists(release_request(worker.guard.unit)):
                os.unlink(release_request(worker.guard.unit))
                worker.ask("release", "asked to")
        return self.check()

    def check(self):
        """The watchdog: raises GuardFailure for a failed thread, or a holder not fenced by
        F + TTL/20 (its thread is stuck); else the seconds until the next such moment."""
        pause = POLL
        now = time.monotonic()
        for name, worker in self.workers.items():
            if worker.error:
                raise GuardFailure(f"{name}: its thread failed: {worker.error}")
            guard = worker.guard
            if guard.role == "holder":
                late = guard.renewed + guard.fence_after + guard.ttl / 20
                if now > late:
                    raise GuardFailure(f"{name}: not renewed for {now - guard.renewed:.1f} s and not fenced")
                pause = min(pause, late - now)
        return max(0.05, pause)

    def fence_all(self):
        """Every guarded unit stopped at once, the threads halted first; True when none is left."""
        for worker in self.workers.values():
            worker.halt()
        return stop_all([w.guard.unit for w in self.workers.values()], stop_grace(self.config["ttl"]))

    def shut_down(self, revoke):
        """Each thread stops its unit (and gives the key up when `revoke`), all at once; a unit
        whose thread does not end within the TTL is stopped here."""
        for worker in self.workers.values():
            worker.ask("shut_down", revoke)
        end = time.monotonic() + self.config["ttl"]
        for worker in self.workers.values():
            worker.thread.join(max(0.0, end - time.monotonic()))
        late = [w.guard.unit for w in self.workers.values() if w.thread.is_alive()]
        if late:
            stop_all(late, stop_grace(self.config["ttl"]))


def supervise(supervisor, stopping, sleep):
    """The supervisor's loop until `stopping()`, sleeping with `sleep(seconds)`; its exit status.
    Anything unexpected (a thread failed or is stuck, an error in the loop) stops every guarded
    unit at once and ends with status 1: systemd starts the supervisor again (Restart=always),
    which adopts the leases still alive."""
    try:
        while not stopping():
            sleep(supervisor.round())
    except BaseException as e:
        log(f"supervisor failed: {e!r}\n{traceback.format_exc()}fencing every guarded unit")
        stopped = supervisor.fence_all()
        log("every guarded unit stopped" if stopped else "a guarded unit is STILL RUNNING after SIGKILL")
        return 1
    shutting_down = system_stopping()
    supervisor.shut_down(revoke=shutting_down)
    log("supervisor stopped, its units with it" + ("; the node shuts down: keys given up" if shutting_down else ""))
    return 0


def system_stopping():
    """Whether the node shuts down (systemctl's answer within its deadline)."""
    try:
        state = subprocess.run(
            [*SYSTEMCTL, "is-system-running"], capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT
        ).stdout
    except subprocess.TimeoutExpired:
        return False
    return state.strip() == "stopping"


def run(config, names):
    """Supervises the units until SIGTERM."""
    os.makedirs(RUN_DIR, exist_ok=True)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    signal.signal(signal.SIGUSR1, lambda *_: None)  # `release` asks; the wake-up pipe wakes us

    def wake():
        try:
            os.write(wake_w, b"\0")
        except BlockingIOError:
            pass  # a wake-up is pending already

    def sleep(pause):
        if pause > 0 and not stopping:
            ready, _, _ = select.select([wake_r], [], [], pause)
            if ready:
                os.read(wake_r, 64)

    return supervise(Supervisor(config, names, wake=wake), lambda: bool(stopping), sleep)


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
        [*SYSTEMCTL, "kill", "--kill-who=main", "--signal=SIGUSR1", "hactl-guard.service"],
        capture_output=True,
        text=True,
        timeout=SYSTEMCTL_TIMEOUT,
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
    return 0 if stop_all(units_of(config, names), stop_grace(config["ttl"])) else 1


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
    except (ConfigError, EtcdError, subprocess.TimeoutExpired) as e:
        print(f"hactl-guard: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
# {% endraw %}
