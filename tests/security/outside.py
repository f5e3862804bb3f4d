#!/usr/bin/python3
"""What a machine outside the inventory gets from the cluster's nodes (tests/airflow.rs runs it on
a lab node that is not in the inventory). Python's standard library only.

Reads a JSON list of attempts on stdin, each {"what", "host", "port", "kind", ...}, tries them all
at once (each gives up after TIMEOUT s) and prints one JSON line per attempt:
{"what", "host", "port", "outcome", "detail"}, where outcome is
  "no connection"  the TCP connection was refused or never answered;
  "refused"        the service answered and refused (HTTP 401/403, an AMQP or PostgreSQL refusal);
  "granted"        the service did what was asked (HTTP 2xx, an AMQP or PostgreSQL login);
  "answered"       the service answered otherwise (detail says how).
Kinds: "tcp" (a connection is all), "http" (method, path, body, and user and password for
basic authentication: a request), "amqp" (user,
password: an AMQP 0-9-1 login with PLAIN), "postgres" (user, password, database: a login,
SCRAM-SHA-256 or cleartext as the server asks).
"""

import base64
import concurrent.futures
import errno
import hashlib
import hmac
import json
import os
import socket
import struct
import sys
import urllib.error
import urllib.request

TIMEOUT = 4.0


class NoConnection(Exception):
    """The TCP connection was refused, unreachable or never answered."""


def no_connection(error):
    """Whether a connect's error means that nothing answered."""
    return isinstance(error, (ConnectionRefusedError, socket.timeout, TimeoutError)) or getattr(
        error, "errno", None
    ) in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT)


def connect(host, port):
    try:
        return socket.create_connection((host, port), timeout=TIMEOUT)
    except OSError as e:
        if no_connection(e):
            raise NoConnection(type(e).__name__) from e
        raise


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed by the server")
        data += chunk
    return data


def try_tcp(attempt):
    connect(attempt["host"], attempt["port"]).close()
    return "answered", "a TCP connection"


def try_http(attempt):
    url = f"http://{attempt['host']}:{attempt['port']}{attempt.get('path', '/')}"
    body = attempt.get("body")
    headers = {"Content-Type": "application/json"}
    if "user" in attempt:
        pair = f"{attempt['user']}:{attempt['password']}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    request = urllib.request.Request(
        url,
        data=None if body is None else body.encode(),
        method=attempt.get("method", "GET"),
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return "granted", f"HTTP {response.status}"
    except urllib.error.HTTPError as e:
        return ("refused" if e.code in (401, 403) else "answered"), f"HTTP {e.code}"


def amqp_table(entries):
    out = b""
    for key, value in entries.items():
        out += bytes([len(key)]) + key.encode() + b"S" + struct.pack(">I", len(value)) + value.encode()
    return struct.pack(">I", len(out)) + out


def amqp_method(sock):
    """The next frame's (class, method) ids."""
    kind, _channel, size = struct.unpack(">BHI", read_exact(sock, 7))
    payload = read_exact(sock, size + 1)[:-1]
    if kind != 1:
        return None
    return struct.unpack(">HH", payload[:4])


def try_amqp(attempt):
    with connect(attempt["host"], attempt["port"]) as sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        if amqp_method(sock) != (10, 10):
            return "answered", "no connection.start"
        response = f"\x00{attempt['user']}\x00{attempt['password']}"
        args = (
            amqp_table({"product": "hactl-outside-probe"})
            + bytes([5]) + b"PLAIN"
            + struct.pack(">I", len(response)) + response.encode()
            + bytes([5]) + b"en_US"
        )
        payload = struct.pack(">HH", 10, 11) + args
        sock.sendall(struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce")
        try:
            method = amqp_method(sock)
        except (ConnectionError, socket.timeout) as e:
            return "refused", f"login refused ({e})"
        if method == (10, 30):
            return "granted", "connection.tune: logged in"
        return "refused", f"method {method}"


def pg_message(sock):
    kind = read_exact(sock, 1)
    (size,) = struct.unpack(">I", read_exact(sock, 4))
    return kind, read_exact(sock, size - 4)


def pg_send(sock, kind, body):
    sock.sendall(kind + struct.pack(">I", len(body) + 4) + body)


def pg_error(body):
    fields = dict((f[:1], f[1:].decode(errors="replace")) for f in body.split(b"\x00") if f)
    return fields.get(b"M", "an error")


def pg_scram(sock, password):
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n=,r={nonce}"
    first = ("n,," + first_bare).encode()
    mechanism = b"SCRAM-SHA-256\x00"
    pg_send(sock, b"p", mechanism + struct.pack(">I", len(first)) + first)
    kind, body = pg_message(sock)
    if kind != b"R" or struct.unpack(">I", body[:4])[0] != 11:
        return kind, body
    server_first = body[4:].decode()
    fields = dict(part.split("=", 1) for part in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored = hashlib.sha256(client_key).digest()
    final_bare = f"c=biws,r={fields['r']}"
    message = f"{first_bare},{server_first},{final_bare}".encode()
    signature = hmac.new(stored, message, hashlib.sha256).digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature))).decode()
    pg_send(sock, b"p", f"{final_bare},p={proof}".encode())
    return pg_message(sock)


def try_postgres(attempt):
    with connect(attempt["host"], attempt["port"]) as sock:
        params = f"user\x00{attempt['user']}\x00database\x00{attempt['database']}\x00\x00".encode()
        startup = struct.pack(">I", 196608) + params
        sock.sendall(struct.pack(">I", len(startup) + 4) + startup)
        while True:
            kind, body = pg_message(sock)
            if kind == b"E":
                return "refused", pg_error(body)
            if kind != b"R":
                return "answered", f"message {kind!r}"
            code = struct.unpack(">I", body[:4])[0]
            if code == 0:
                return "granted", "authentication ok: logged in"
            if code == 3:
                pg_send(sock, b"p", attempt["password"].encode() + b"\x00")
            elif code == 10:
                kind, body = pg_scram(sock, attempt["password"])
                if kind == b"E":
                    return "refused", pg_error(body)
            elif code != 12:
                return "answered", f"authentication request {code}"


KINDS = {"tcp": try_tcp, "http": try_http, "amqp": try_amqp, "postgres": try_postgres}


def attempt_one(attempt):
    result = {key: attempt[key] for key in ("what", "host", "port")}
    try:
        result["outcome"], result["detail"] = KINDS[attempt["kind"]](attempt)
    except NoConnection as e:
        result["outcome"], result["detail"] = "no connection", str(e)
    except urllib.error.URLError as e:
        # urllib wraps what happened while connecting; what came after is not wrapped.
        nothing = no_connection(e.reason) if isinstance(e.reason, OSError) else False
        result["outcome"] = "no connection" if nothing else "answered"
        result["detail"] = str(e.reason)
    except OSError as e:
        # Connected, then a reset, a close or no answer in time.
        result["outcome"], result["detail"] = "answered", f"connected, then {type(e).__name__}: {e}"
    return result


def main():
    attempts = json.load(sys.stdin)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(attempts) or 1) as pool:
        for result in pool.map(attempt_one, attempts):
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
