"""Ids from the sandbox kit's block of random bytes never repeat across a fork (rev17e): a child
forked with part of the parent's block left must not hand out the bytes the parent hands out
next (os.register_at_fork drops the child's copy)."""

from __future__ import annotations

import os

import pytest

from sandbox_kit import ids


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_and_its_parent_mint_different_ids() -> None:
    ids.new_id("evt")  # a block read, most of it left for what follows
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids to the parent, then out without pytest's teardown
        try:
            os.close(read_end)
            os.write(write_end, " ".join(ids.new_id("evt") for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    parents = {ids.new_id("evt") for _ in range(50)}
    with os.fdopen(read_end, "rb") as pipe:
        childs = set(pipe.read().decode().split())
    os.waitpid(pid, 0)
    assert len(childs) == 50 and len(parents) == 50
    assert not parents & childs
