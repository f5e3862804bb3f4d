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

    def state(self):
        return "active" if self.up else "inactive"

    def exists(self):
        return True

    def running(self):
        return self.up

    def start(self):
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

    def test_the_units_file_is_followed_and_a_unit_taken_off_it_keeps_running(self):
        units_file = os.path.join(tempfile.mkdtemp(prefix="hactl-guard-units-"), "units")
        self.addCleanup(shutil.rmtree, os.path.dirname(units_file))
        config = {"node": "a", "endpoints": [self.endpoint], "ttl": TTL, "prefix": self.prefix, "units_file": units_file}
        made = {}
        supervisor = guard.Supervisor(config, [], make_unit=lambda n: made.setdefault(n, FakeUnit(self.cluster, "a", n)))
        supervisor.round()
        self.assertEqual(supervisor.guards, {}, "no units file: nothing supervised")
        with open(units_file, "w") as f:
            f.write("guarded.service\n# a comment\n")
        supervisor.round()
        supervisor.round()
        self.assertTrue(made["guarded.service"].up, "listed: elected and started")
        with open(units_file + ".new", "w") as f:
            f.write("")
        os.rename(units_file + ".new", units_file)  # as hactl writes files: a new inode
        supervisor.round()
        self.assertEqual(supervisor.guards, {})
        self.assertTrue(made["guarded.service"].up, "taken off the list: left running")
        self.assertIsNone(guard.Etcd([self.endpoint]).get(f"{self.prefix}/guarded.service"), "its key given up")


class TlsTest(unittest.TestCase):
    """etcd with client-certificate authentication (as hactl runs it with etcd_tls): the guard's
    client with the cluster CA and a certificate from it is admitted, one without is refused."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="hactl-guard-tls-")
        cls.tls = {name: os.path.join(cls.dir, f"{name}.pem") for name in ("cacert", "cert", "key")}
        ca_key = os.path.join(cls.dir, "ca.key")

        def openssl(*args):
            subprocess.run(["openssl", *args], check=True, capture_output=True)

        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                "-subj", "/CN=test CA", "-keyout", ca_key, "-out", cls.tls["cacert"])
        csr = os.path.join(cls.dir, "host.csr")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=node",
                "-keyout", cls.tls["key"], "-out", csr)
        ext = os.path.join(cls.dir, "ext.cnf")
        with open(ext, "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
        openssl("x509", "-req", "-in", csr, "-CA", cls.tls["cacert"], "-CAkey", ca_key, "-CAcreateserial",
                "-days", "2", "-extfile", ext, "-out", cls.tls["cert"])
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
