# `dist_version(NAME)`: the version of the installed distribution NAME (None: not installed),
# found as importlib.metadata finds it (the first `*.dist-info` or `*.egg-info` directory on
# sys.path whose name normalizes to NAME's; its METADATA's Version) without importing
# importlib.metadata, which costs a probe more CPU than all the rest of it.
import os
import re
import sys


def _normalized(name):
    return re.sub(r"[-_.]+", "_", name).lower()


def _metadata_version(directory):
    for meta in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(directory, meta), encoding="utf-8") as f:
                for line in f:
                    if line.startswith("Version:"):
                        return line.split(":", 1)[1].strip()
                    if not line.strip():
                        break
        except OSError:
            continue
    return None


def dist_version(name):
    want = _normalized(name)
    for entry in sys.path:
        try:
            found = sorted(os.listdir(entry or "."))
        except OSError:
            continue
        for item in found:
            stem, _, kind = item.rpartition(".")
            if kind in ("dist-info", "egg-info") and _normalized(stem.split("-")[0]) == want:
                version = _metadata_version(os.path.join(entry or ".", item))
                if version:
                    return version
    return None
