"""Ids drawn in blocks (outbound/random_ids.py): every byte handed out once, across
refills and across a fork, and each id the length asked. (The pool's lock is not
tested: on CPython with its GIL nothing inside ``take`` lets another thread in between
the read and the move of the offset, so its absence cannot be made to show.)"""

from __future__ import annotations

import os
import re

import pytest

from outbound import random_ids
from outbound.random_ids import BLOCK, random_hex


def test_lengths_and_blocks_span() -> None:
    for n in (1, 8, 10, 12, BLOCK - 1, BLOCK, BLOCK + 5):
        token = random_hex(n)
        assert re.fullmatch(r"[0-9a-f]+", token) and len(token) == 2 * n
    # more than a block's worth of small ids: none repeats across the refills
    many = [random_hex(8) for _ in range(3 * BLOCK // 8)]
    assert len(set(many)) == len(many)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_forked_child_does_not_reuse_the_parents_block() -> None:
    random_hex(8)  # the parent holds a block with bytes left
    left = random_ids._pool._block[random_ids._pool._at :]
    assert len(left) >= 16
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: say its next 16 bytes and leave at once
        try:
            os.write(write, bytes.fromhex(random_hex(16)))
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 64)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 16
    assert child != left[:16]  # the parent's next bytes, had the child kept the block
    assert bytes.fromhex(random_hex(16)) == left[:16]  # the parent's own next draw
