"""Resource ids: UUIDv7 with random bits drawn from the OS a block at a time."""

from __future__ import annotations

import os
import threading
import time

from oprun.domain import ids


def test_a_uuid7_has_its_version_its_variant_and_the_time_first() -> None:
    before = time.time_ns() // 1_000_000
    value = int(ids.uuid7_hex(), 16)
    after = time.time_ns() // 1_000_000
    assert (value >> 76) & 0xF == 7
    assert (value >> 62) & 0b11 == 0b10
    assert before <= value >> 80 <= after


def test_ids_do_not_repeat_across_blocks() -> None:
    made = {ids.new_id("operation") for _ in range(3 * ids.RANDOM_BLOCK // 10)}
    assert len(made) == 3 * ids.RANDOM_BLOCK // 10


def test_threads_draw_bytes_of_their_own() -> None:
    drawn: list[bytes] = []
    lock = threading.Lock()

    def draw() -> None:
        mine = [ids.random_bytes(10) for _ in range(500)]
        with lock:
            drawn.extend(mine)

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(drawn)) == len(drawn) == 2000


def test_a_forked_child_never_hands_out_its_parents_next_bytes() -> None:
    ids.random_bytes(10)  # the parent holds a block with bytes left in it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send what it would hand out next, then leave at once
        try:
            os.write(write, ids.random_bytes(16))
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 16
    assert ids.random_bytes(16) != child
