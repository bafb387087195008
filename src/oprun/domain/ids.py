"""Resource ids: a short prefix naming the kind, then a UUIDv7 in hex.

UUIDv7 puts a millisecond timestamp first (ids sort by creation, which keeps
B-tree inserts local) and 74 random bits after it, so ids are never guessable
across projects.
"""

from __future__ import annotations

import os
import time

PREFIXES = {
    "project": "prj",
    "token": "tok",
    "queue": "q",
    "action": "act",
    "action_version": "actv",
    "operation": "op",
    "task": "task",
    "session": "sess",
    "session_action": "sa",
    "worker": "wk",
}


def uuid7_hex() -> str:
    """Return a new UUIDv7 as 32 lowercase hex digits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)  # 62 bits
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return f"{value:032x}"


def new_id(kind: str) -> str:
    """Return a new id for a resource of `kind` (a key of `PREFIXES`), e.g. ``op_0190...``."""
    return f"{PREFIXES[kind]}_{uuid7_hex()}"
