"""The guard's supervisor (templates/guard/hactl-guard.py) against a real etcd on loopback.

The supervisors run in threads of this process, each with a unit that records when it runs: a
check that two ever run at once is exact here. Needs $ETCD_BIN (tests/guard.rs provides
Debian's etcd 3.4). Run: ETCD_BIN=... python3 -m unittest tests/guard/test_hactl_guard.py
"""

import importlib.util
import json
import os
import shutil
import signal
import ssl
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC = importlib.util.spec_from_file_location(
    "hactl_guard", os.path.join(HERE, "..", "..", "templates", "guard", "hactl-guard.py")
)
guard = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(guard)
guard.log = lambda message: None

TTL = 5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Where every fake unit reports: how many run at once, the most ever seen."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running = set()
        self.most = 0

    def holders(self):
        with self.lock:
            return set(self.running)


class FakeUnit:
    """A unit that starts and stops at once and tells the cluster."""

    def __init__(self, cluster, node, name="guarded.service"):
        self.cluster, self.node = cluster, node
        self.name = name
        self.up = False
        self.stopped_at = None

    def state(self, deadline=None):
        return "active" if self.up else "inactive"

    def exists(self):
        return True

    def running(self, deadline=None):
        return self.up

    def stopped(self, deadline=None):
        return not self.up

    def start(self, deadline=None):
        with self.cluster.lock:
            if not self.up:
                self.up = True
                self.cluster.running.add(self.node)
                self.cluster.most = max(self.cluster.most, len(self.cluster.running))

    def stop(self, grace):
        with self.cluster.lock:
            if self.up:
                self.up = False
                self.cluster.running.discard(self.node)
                self.stopped_at = time.monotonic()
        return True


class Node:
    """One node's supervisor, stepping in a thread until crashed or stopped."""

    def __init__(self, cluster, name, endpoint, prefix):
        self.unit = FakeUnit(cluster, name)
        self.guard = guard.Guard(guard.Etcd([endpoint], timeout=0.5), self.unit, name, TTL, prefix)
        self.halt = threading.Event()
        self.asked = []
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.halt.is_set():
            if self.asked:
                self.guard.release(self.asked.pop())
            self.halt.wait(self.guard.step())

    def crash(self):
        """Everything on the node dies at once: the supervisor and the unit."""
        self.halt.set()
        self.thread.join()
        self.unit.stop(0)


class FakeSystemd:
    """tests/guard/fake_systemctl.sh as the guard's systemctl for one test."""

    def __init__(self, test, stop_delay):
        self.dir = tempfile.mkdtemp(prefix="hactl-guard-systemd-")
        test.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
        with open(os.path.join(self.dir, "stop_delay"), "w") as f:
            f.write(str(stop_delay))
        saved = guard.SYSTEMCTL, os.environ.get("HACTL_FAKE_SYSTEMD")
        guard.SYSTEMCTL = ("/bin/sh", os.path.join(HERE, "fake_systemctl.sh"))
        os.environ["HACTL_FAKE_SYSTEMD"] = self.dir
        test.addCleanup(self.restore, saved)

    @staticmethod
    def restore(saved):
        guard.SYSTEMCTL = saved[0]
        if saved[1] is None:
            os.environ.pop("HACTL_FAKE_SYSTEMD", None)
        else:
            os.environ["HACTL_FAKE_SYSTEMD"] = saved[1]

    def state(self, unit):
        try:
            with open(os.path.join(self.dir, f"{unit}.state")) as f:
                return f.read().strip()
        except FileNotFoundError:
            return "inactive"

    def hang(self):
        open(os.path.join(self.dir, "hang"), "w").close()


class Hanging:
    """A loopback endpoint that accepts connections and never answers (or answers `reply`)."""

    def __init__(self, test, reply=None):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.endpoint = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.reply = reply
        self.held = []
        threading.Thread(target=self.serve, daemon=True).start()
        test.addCleanup(self.close)

    def serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.held.append(conn)
            if self.reply is not None:
                conn.recv(65536)
                conn.sendall(self.reply)

    def close(self):
        self.server.close()
        for conn in self.held:
            conn.close()


class GuardTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.data = tempfile.mkdtemp(prefix="hactl-guard-etcd-")
        client, peer = free_port(), free_port()
        cls.endpoint = f"http://127.0.0.1:{client}"
        cls.etcd = subprocess.Popen(
            [
                os.environ["ETCD_BIN"],
                "--name", "t", "--data-dir", cls.data,
                "--listen-client-urls", cls.endpoint, "--advertise-client-urls", cls.endpoint,
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"t=http://127.0.0.1:{peer}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(cls.endpoint + "/health", timeout=1) as r:
                    if json.load(r).get("health") == "true":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("etcd did not become healthy")
            time.sleep(0.2)

    @classmethod
    def tearDownClass(cls):
        cls.etcd.send_signal(signal.SIGCONT)
        cls.etcd.kill()
        cls.etcd.wait()
        shutil.rmtree(cls.data, ignore_errors=True)

    def setUp(self):
        self.cluster = Cluster()
        self.prefix = f"/test/{self.id()}"
        self.nodes = {}

    def tearDown(self):
        for node in self.nodes.values():
            node.halt.set()
        self.assertLessEqual(self.cluster.most, 1, "two nodes ran the unit at once")

    def start(self, *names):
        for name in names:
            self.nodes[name] = Node(self.cluster, name, self.endpoint, self.prefix)

    def wait_for(self, what, seconds):
        """Waits until what() is truthy; returns the seconds it took."""
        started = time.monotonic()
        while not what():
            self.assertLess(time.monotonic() - started, seconds, f"not within {seconds} s")
            time.sleep(0.05)
        return time.monotonic() - started

    def one_holder(self):
        holders = self.cluster.holders()
        return next(iter(holders)) if len(holders) == 1 else None

    def test_exactly_one_of_three_runs_the_unit_and_keeps_it(self):
        self.start("a", "b", "c")
        holder = None
        self.wait_for(lambda: self.one_holder(), 5)
        holder = self.one_holder()
        time.sleep(TTL * 2)  # several renewals later: still the same single holder
        self.assertEqual(self.cluster.holders(), {holder})
        kv = guard.Etcd([self.endpoint]).get(f"{self.prefix}/guarded.service")
        self.assertEqual(kv["node"], holder)
        self.assertEqual(kv["create_revision"], self.nodes[holder].guard.token)

    def test_a_crashed_holder_is_replaced_after_the_ttl_and_does_not_take_it_back(self):
        self.start("a", "b")
        self.wait_for(self.one_holder, 5)
        first = self.one_holder()
        self.nodes[first].crash()
        took = self.wait_for(lambda: self.one_holder() not in (None, first), TTL + 3)
        self.assertGreater(took, TTL * 0.6, "taken over before the lease could have expired")
        second = self.one_holder()
        self.nodes[first] = Node(self.cluster, first, self.endpoint, self.prefix)  # it comes back
        time.sleep(3)
        self.assertEqual(self.cluster.holders(), {second}, "the returning node took the unit back")

    def test_a_holder_that_cannot_reach_etcd_stops_the_unit_before_the_ttl_ends(self):
        self.start("a", "b")
        self.wait_for(self.one_holder, 5)
        holder = self.nodes[self.one_holder()]
        self.etcd.send_signal(signal.SIGSTOP)  # no answer from etcd at all (a partition)
        try:
            last_renewal = holder.guard.renewed
            self.wait_for(lambda: not self.cluster.holders(), TTL)
            fenced_after = holder.unit.stopped_at - last_renewal
            self.assertLess(fenced_after, TTL - 0.5, f"stopped {fenced_after:.2f} s after the last renewal")
            self.assertEqual(holder.guard.role, "fenced")
        finally:
            self.etcd.send_signal(signal.SIGCONT)
        self.wait_for(self.one_holder, TTL + 5)  # etcd back: exactly one runs it again
        time.sleep(2)
        self.assertEqual(len(self.cluster.holders()), 1)

    def test_release_hands_over_and_the_releasing_node_stays_out(self):
        self.start("a", "b")
        self.wait_for(self.one_holder, 5)
        first = self.one_holder()
        self.nodes[first].asked.append("maintenance")
        took = self.wait_for(lambda: self.one_holder() not in (None, first), 4)
        self.assertLess(took, 4)
        time.sleep(guard.HOLD_OFF + 1)
        self.assertNotIn(first, self.cluster.holders())

    def test_a_restarted_supervisor_keeps_its_unit_running(self):
        self.start("a")
        self.wait_for(self.one_holder, 5)
        old = self.nodes["a"]
        old.halt.set()
        old.thread.join()  # the supervisor alone died; the unit still runs
        token = old.guard.token
        restarted = guard.Guard(guard.Etcd([self.endpoint]), old.unit, "a", TTL, self.prefix)
        restarted.step()
        self.assertEqual(restarted.role, "holder")
        self.assertEqual(restarted.token, token)
        self.assertTrue(old.unit.up)
        self.assertIsNone(old.unit.stopped_at, "the unit was stopped on the supervisor's restart")

    def test_a_deleted_key_makes_the_holder_stop(self):
        self.start("a")
        self.wait_for(self.one_holder, 5)
        key = f"{self.prefix}/guarded.service"
        guard.Etcd([self.endpoint]).call("kv/deleterange", {"key": guard.b64(key)})
        self.wait_for(lambda: self.nodes["a"].unit.stopped_at is not None, 3)

    def test_a_standby_stops_a_unit_that_runs_without_the_key(self):
        self.start("a")
        self.wait_for(self.one_holder, 5)
        stray = FakeUnit(self.cluster, "b")
        stray.up = True  # started by hand on b, outside the cluster's count
        standby = guard.Guard(guard.Etcd([self.endpoint]), stray, "b", TTL, self.prefix)
        standby.step()
        self.assertFalse(stray.up)
        self.assertEqual(standby.role, "standby")


    def test_a_unit_taken_off_the_list_meanwhile_is_not_stopped(self):
        self.start("a")
        self.wait_for(self.one_holder, 5)
        started_by_hactl = FakeUnit(Cluster(), "b")  # counted apart: no longer a singleton
        started_by_hactl.up = True
        standby = guard.Guard(guard.Etcd([self.endpoint]), started_by_hactl, "b", TTL, self.prefix, lambda: False)
        standby.step()
        self.assertTrue(started_by_hactl.up)

    def supervisor(self, units, make_unit=None, ttl=TTL):
        """A Supervisor of `units` (a units file written for it) on this etcd, halted at the end."""
        units_file = os.path.join(tempfile.mkdtemp(prefix="hactl-guard-units-"), "units")
        self.addCleanup(shutil.rmtree, os.path.dirname(units_file))
        if units is not None:
            with open(units_file, "w") as f:
                f.write("".join(f"{u}\n" for u in units))
        config = {"node": "a", "endpoints": [self.endpoint], "ttl": ttl, "prefix": self.prefix, "units_file": units_file}
        supervisor = guard.Supervisor(config, [], **({"make_unit": make_unit} if make_unit else {}))
        self.addCleanup(self.halt, supervisor)
        return supervisor

    @staticmethod
    def halt(supervisor):
        for worker in supervisor.workers.values():
            worker.halt()
        for worker in supervisor.workers.values():
            worker.thread.join(5)

    def test_the_units_file_is_followed_and_a_unit_taken_off_it_keeps_running(self):
        made = {}
        supervisor = self.supervisor(None, lambda n: made.setdefault(n, FakeUnit(self.cluster, "a", n)))
        units_file = supervisor.config["units_file"]
        supervisor.round()
        self.assertEqual(supervisor.workers, {}, "no units file: nothing supervised")
        with open(units_file, "w") as f:
            f.write("guarded.service\n# a comment\n")
        supervisor.round()
        self.wait_for(lambda: made["guarded.service"].up, 3)  # listed: elected and started
        with open(units_file + ".new", "w") as f:
            f.write("")
        os.rename(units_file + ".new", units_file)  # as hactl writes files: a new inode
        supervisor.round()
        self.assertEqual(supervisor.workers, {})
        etcd = guard.Etcd([self.endpoint])
        self.wait_for(lambda: etcd.get(f"{self.prefix}/guarded.service") is None, 3)  # its key given up
        self.assertTrue(made["guarded.service"].up, "taken off the list: left running")

    def test_many_units_are_fenced_at_once_within_the_budget(self):
        # Eight units whose stop takes 0.3 s each (one after another, the last would go 2.4 s
        # after the fencing moment: past the TTL); etcd stops answering (an endpoint that
        # accepts and never replies).
        systemd = FakeSystemd(self, stop_delay=0.3)
        units = [f"u{i}.service" for i in range(8)]
        supervisor = self.supervisor(units)
        supervisor.round()
        self.wait_for(lambda: all(systemd.state(u) == "active" for u in units), 5)
        hanging = Hanging(self)
        supervisor.etcd.endpoints = [hanging.endpoint]
        stopped_at = {}

        def all_stopped():
            supervisor.check()  # the watchdog stays quiet: every thread fences in time
            for u in units:
                if u not in stopped_at and systemd.state(u) == "inactive":
                    stopped_at[u] = time.monotonic()
            return len(stopped_at) == len(units)

        self.wait_for(all_stopped, TTL)
        self.wait_for(lambda: all(w.guard.role == "fenced" for w in supervisor.workers.values()), 2)
        for name, worker in supervisor.workers.items():
            after = stopped_at[name] - worker.guard.renewed
            self.assertLess(after, TTL - 0.5, f"{name} stopped {after:.2f} s after its last renewal")
        spread = stopped_at.values()
        self.assertLess(max(spread) - min(spread), 2, "fenced at once, not one after another")

    def test_a_failure_in_a_guard_fences_every_unit_and_exits_1(self):
        made = {}
        supervisor = self.supervisor(["one.service", "two.service"], lambda n: made.setdefault(n, FakeUnit(Cluster(), "a", n)))
        supervisor.round()
        self.wait_for(lambda: len(made) == 2 and all(u.up for u in made.values()), 5)

        def broken(*args):
            raise RuntimeError("an answer nobody expected")

        supervisor.etcd.fetch = broken
        failed = time.monotonic()
        code = guard.supervise(supervisor, lambda: False, lambda pause: time.sleep(min(pause, 0.05)))
        took = time.monotonic() - failed
        self.assertEqual(code, 1)
        self.assertFalse(any(u.up for u in made.values()), "every unit stopped")
        self.assertLess(took, TTL * 0.6, f"fenced {took:.2f} s after the failure")
        self.assertTrue(all(w.halted.is_set() for w in supervisor.workers.values()))

    def test_an_error_in_the_loop_fences_every_unit_and_exits_1(self):
        made = {}
        supervisor = self.supervisor(["one.service"], lambda n: made.setdefault(n, FakeUnit(Cluster(), "a", n)))
        supervisor.round()
        self.wait_for(lambda: made["one.service"].up, 5)

        def sleep(pause):
            raise OSError("the wake-up pipe broke")

        self.assertEqual(guard.supervise(supervisor, lambda: False, sleep), 1)
        self.assertFalse(made["one.service"].up)

    def test_a_stuck_holder_thread_is_caught_by_the_watchdog(self):
        made = {}
        supervisor = self.supervisor(["one.service"], lambda n: made.setdefault(n, FakeUnit(Cluster(), "a", n)))
        supervisor.round()
        self.wait_for(lambda: made["one.service"].up, 5)
        worker = supervisor.workers["one.service"]
        worker.halt()  # no more rounds: as if stuck
        worker.thread.join()
        worker.guard.role = "holder"
        self.wait_for(lambda: self.raises_failure(supervisor), TTL)
        self.assertGreater(time.monotonic() - worker.guard.renewed, worker.guard.fence_after)

    @staticmethod
    def raises_failure(supervisor):
        try:
            supervisor.check()
        except guard.GuardFailure:
            return True
        return False

    def test_etcd_calls_end_by_their_deadline_on_an_endpoint_that_never_answers(self):
        hanging = Hanging(self)
        etcd = guard.Etcd([hanging.endpoint, Hanging(self).endpoint], timeout=0.4)
        started = time.monotonic()
        with self.assertRaises(guard.EtcdError):
            etcd.get("/k")
        self.assertLess(time.monotonic() - started, 1.0, "two endpoints, 0.4 s each")
        started = time.monotonic()
        with self.assertRaises(guard.EtcdError):
            etcd.keepalive(1, deadline=time.monotonic() + 0.25)
        self.assertLess(time.monotonic() - started, 0.4, "over by the deadline")

    def test_an_answer_that_is_not_json_is_an_etcd_error(self):
        for reply in (b"not json", b"[1, 2]"):
            garbage = Hanging(self, reply=b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(reply), reply))
            with self.assertRaises(guard.EtcdError):
                guard.Etcd([garbage.endpoint]).get("/k")

    def test_a_systemctl_that_hangs_does_not_hold_the_stop(self):
        systemd = FakeSystemd(self, stop_delay=0)
        unit = guard.SystemdUnit("hung.service")
        unit.start()
        systemd.hang()
        grace = 0.4
        started = time.monotonic()
        self.assertFalse(unit.stop(grace), "not known to be stopped")
        self.assertLess(time.monotonic() - started, 2 * grace + 0.3)
        started = time.monotonic()
        self.assertFalse(guard.stop_all([guard.SystemdUnit(f"h{i}") for i in range(6)], grace))
        self.assertLess(time.monotonic() - started, 2 * grace + 0.6, "six hung stops at once")

    def test_the_service_restarts_the_supervisor_whatever_ended_it(self):
        with open(os.path.join(HERE, "..", "..", "templates", "guard", "hactl-guard.service.j2")) as f:
            unit = f.read()
        self.assertIn("\nRestart=always\n", unit)
        self.assertRegex(unit, r"\nRestartSec=[1-9]")
        self.assertIn("ExecStopPost=-/usr/local/bin/hactl-guard stop-units", unit)


class TlsTest(unittest.TestCase):
    """etcd with client-certificate authentication (as hactl runs it with etcd_tls): the guard's
    client with the cluster CA and a certificate from it is admitted, one without is refused."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="hactl-guard-tls-")
        cls.tls = {"cacert": os.path.join(cls.dir, "ca.pem")}
        cls.ca_key = os.path.join(cls.dir, "ca.key")
        cls.make_ca(cls.ca_key, cls.tls["cacert"])
        cls.tls["cert"], cls.tls["key"] = cls.issue("host", cls.ca_key, cls.tls["cacert"])
        client, peer = free_port(), free_port()
        cls.endpoint = f"https://127.0.0.1:{client}"
        cls.etcd = subprocess.Popen(
            [
                os.environ["ETCD_BIN"],
                "--name", "t", "--data-dir", os.path.join(cls.dir, "data"),
                "--listen-client-urls", cls.endpoint, "--advertise-client-urls", cls.endpoint,
                "--cert-file", cls.tls["cert"], "--key-file", cls.tls["key"],
                "--trusted-ca-file", cls.tls["cacert"], "--client-cert-auth",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"t=http://127.0.0.1:{peer}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        etcd = guard.Etcd([cls.endpoint], tls=cls.tls)
        deadline = time.monotonic() + 30
        while True:
            try:
                etcd.get("/probe")
                break
            except guard.EtcdError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    @classmethod
    def tearDownClass(cls):
        cls.etcd.kill()
        cls.etcd.wait()
        shutil.rmtree(cls.dir, ignore_errors=True)

    @staticmethod
    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    @classmethod
    def make_ca(cls, key, cert):
        cls.openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                    "-subj", "/CN=test CA", "-keyout", key, "-out", cert)

    @classmethod
    def issue(cls, name, ca_key, ca_cert):
        """A new key and a certificate for 127.0.0.1 from the CA: their paths."""
        cert, key, csr = (os.path.join(cls.dir, f"{name}.{ext}") for ext in ("crt", "key", "csr"))
        cls.openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=node",
                    "-keyout", key, "-out", csr)
        ext = os.path.join(cls.dir, "ext.cnf")
        with open(ext, "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
        cls.openssl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
                    "-days", "2", "-extfile", ext, "-out", cert)
        return cert, key

    def test_a_renewed_certificate_is_used_without_a_restart(self):
        client = {"cacert": self.tls["cacert"], "cert": os.path.join(self.dir, "client.crt"),
                  "key": os.path.join(self.dir, "client.key")}
        shutil.copy(self.tls["cert"], client["cert"])
        shutil.copy(self.tls["key"], client["key"])
        etcd = guard.Etcd([self.endpoint], tls=client)
        etcd.get("/tls/key")
        first = etcd.context

        def install(cert, key):
            for source, target in ((cert, client["cert"]), (key, client["key"])):
                shutil.copy(source, target + ".new")
                os.replace(target + ".new", target)  # as hactl writes files

        # From a CA etcd does not trust: the next call presents it, and is refused.
        self.make_ca(os.path.join(self.dir, "other-ca.key"), os.path.join(self.dir, "other-ca.pem"))
        install(*self.issue("stranger", os.path.join(self.dir, "other-ca.key"), os.path.join(self.dir, "other-ca.pem")))
        with self.assertRaises(guard.EtcdError):
            etcd.get("/tls/key")
        self.assertIsNot(etcd.context, first)
        # Renewed by the cluster CA, the certificate first (it does not match the key yet): the
        # last context that loaded is kept, then the pair is used once the key follows.
        cert, key = self.issue("renewed", self.ca_key, self.tls["cacert"])
        shutil.copy(cert, client["cert"] + ".new")
        os.replace(client["cert"] + ".new", client["cert"])
        stranger = etcd.current_context()
        self.assertIs(stranger, etcd.context, "a certificate without its key is not loaded")
        install(cert, key)
        etcd.get("/tls/key")
        self.assertIsNot(etcd.context, stranger)

    def test_a_client_certificate_is_admitted(self):
        etcd = guard.Etcd([self.endpoint], tls=self.tls)
        lease = etcd.grant(10)
        self.assertTrue(etcd.create("/tls/key", json.dumps({"node": "a"}), lease))
        self.assertEqual(etcd.get("/tls/key")["node"], "a")

    def test_a_client_without_a_certificate_is_refused(self):
        no_cert = guard.Etcd([self.endpoint])
        no_cert.context = ssl.create_default_context(cafile=self.tls["cacert"])
        with self.assertRaises(guard.EtcdError):
            no_cert.get("/tls/key")

    def test_unreadable_tls_settings_are_a_configuration_error(self):
        with self.assertRaisesRegex(guard.ConfigError, "etcd TLS settings"):
            guard.Etcd([self.endpoint], tls={**self.tls, "key": "/nonexistent"})


class ConfigTest(unittest.TestCase):
    def write(self, config):
        f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump(config, f)
        f.close()
        self.addCleanup(os.unlink, f.name)
        return f.name

    def test_a_ttl_below_five_seconds_is_refused(self):
        path = self.write({"node": "a", "prefix": "/p", "units_file": "/u", "endpoints": ["http://x:2379"], "ttl": 4})
        with self.assertRaisesRegex(guard.ConfigError, "below 5 s"):
            guard.load_config(path)

    def test_an_empty_endpoint_list_is_refused(self):
        path = self.write({"node": "a", "prefix": "/p", "units_file": "/u", "endpoints": [], "ttl": 15})
        with self.assertRaisesRegex(guard.ConfigError, "endpoint list is empty"):
            guard.load_config(path)

    def test_deadlines_leave_the_stop_inside_the_ttl(self):
        for ttl in (5, 15, 60):
            g = guard.Guard(None, FakeUnit(Cluster(), "a"), "a", ttl, "/p")
            # fencing starts, SIGTERM's grace, SIGKILL's wait: done with a margin before the TTL
            self.assertLess(g.fence_after + 2 * g.stop_grace, ttl * 0.9)
            self.assertLess(g.renew_every * 2, g.fence_after)


if __name__ == "__main__":
    unittest.main()
