# `postgres_password`'s SCRAM-SHA-256 side (python3 as root; no secret on its command line).
# `check`: reads the server's `INDEX|STORED` lines on stdin (STORED: the role's pg_authid
# password, `absent` for no role, `none` for no password) and prints `roleINDEX ok|differs|absent`,
# comparing with $HACTL_PASSWORD_INDEX. `make INDEX`: prints a new verifier (random salt) for
# $HACTL_PASSWORD_INDEX, which ALTER ROLE stores as it is. Passwords are SASLprep'd as
# PostgreSQL and libpq do (RFC 4013; one it prohibits is used as it is).
import base64
import hashlib
import hmac
import os
import re
import stringprep
import sys
import unicodedata

ITERATIONS = 4096
PROHIBITED = (
    stringprep.in_table_a1, stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3,
    stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6, stringprep.in_table_c7,
    stringprep.in_table_c8, stringprep.in_table_c9,
)


def saslprep(raw):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
    if text.isascii():
        return raw
    mapped = "".join(" " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c))
    mapped = unicodedata.normalize("NFKC", mapped)
    if not mapped or any(bad(c) for c in mapped for bad in PROHIBITED):
        return raw
    ral = [stringprep.in_table_d1(c) for c in mapped]
    if any(ral) and (any(stringprep.in_table_d2(c) for c in mapped) or not (ral[0] and ral[-1])):
        return raw
    return mapped.encode("utf-8")


def keys(password, salt, iterations):
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), salt, iterations)
    client = hmac.new(salted, b"Client Key", "sha256").digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    return hashlib.sha256(client).digest(), server


def matches(password, stored):
    m = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", stored)
    if not m:
        return False
    want_stored, want_server = (base64.b64decode(x) for x in m.group(3, 4))
    have_stored, have_server = keys(password, base64.b64decode(m.group(2)), int(m.group(1)))
    return hmac.compare_digest(have_stored, want_stored) and hmac.compare_digest(have_server, want_server)


def password(index):
    return os.environb[b"HACTL_PASSWORD_" + index.encode()]


def check():
    for line in sys.stdin:
        index, _, stored = line.rstrip("\n").partition("|")
        if stored == "absent":
            state = "absent"
        else:
            state = "ok" if matches(password(index), stored) else "differs"
        print(f"role{index} {state}")


def make(index):
    salt = os.urandom(16)
    stored, server = keys(password(index), salt, ITERATIONS)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    print(f"SCRAM-SHA-256${ITERATIONS}:{b64(salt)}${b64(stored)}:{b64(server)}")


if sys.argv[1] == "check":
    check()
else:
    make(sys.argv[2])
