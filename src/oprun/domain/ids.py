"""Resource ids: a short prefix naming the kind, then a UUIDv7 in hex.

UUIDv7 puts a millisecond timestamp first (ids sort by creation, which keeps
B-tree inserts local) and 74 random bits after it, so ids are never guessable
across projects.

The random bits come from the operating system's generator (`os.urandom`), drawn
`RANDOM_BLOCK` bytes at a time per thread: CPython lets go of the GIL around every
`os.urandom` call, and getting it back behind the event loop and other request
threads is a wait. In a drain, a claim writing ids for its sessions and attempts
spent 6 % of the server's samples in those calls, inside its transaction.
"""

from __future__ import annotations

import os
import threading
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


RANDOM_BLOCK = 4096
"""Bytes drawn from `os.urandom` at once, for one thread's next ids."""


class _Random(threading.local):
    block = b""
    used = 0


_random = _Random()


def _forget_random() -> None:
    # A forked child must not hand out the bytes its parent hands out too.
    _random.block, _random.used = b"", 0


os.register_at_fork(after_in_child=_forget_random)


def random_bytes(n: int) -> bytes:
    """`n` (at most `RANDOM_BLOCK`) bytes from the OS's generator, each handed out once."""
    used = _random.used
    if used + n > len(_random.block):
        _random.block, used = os.urandom(RANDOM_BLOCK), 0
    _random.used = used + n
    return _random.block[used : used + n]


def random_hex(n: int) -> str:
    """`n` random bytes as `2n` lowercase hex digits (see `random_bytes`)."""
    return random_bytes(n).hex()


def uuid7_hex() -> str:
    """Return a new UUIDv7 as 32 lowercase hex digits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(random_bytes(10), "big")
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)  # 62 bits
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return f"{value:032x}"


def new_id(kind: str) -> str:
    """Return a new id for a resource of `kind` (a key of `PREFIXES`), e.g. ``op_0190...``."""
    return f"{PREFIXES[kind]}_{uuid7_hex()}"
