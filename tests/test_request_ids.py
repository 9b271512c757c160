"""New request ids: uuid4's hex form (version 4, RFC 4122 variant), unique, and never shared with a forked child."""

from __future__ import annotations

import os
import uuid

from gateway.api.request_ids import RequestIds
from gateway.api.routes import request_id_of


def test_ids_are_uuid4_hex_and_unique() -> None:
    new_id = RequestIds(batch=16)
    ids = [new_id() for _ in range(1000)]  # many batches
    assert len(set(ids)) == 1000
    for rid in ids:
        parsed = uuid.UUID(rid)
        assert (len(rid), parsed.hex, parsed.version, parsed.variant) == (32, rid, 4, uuid.RFC_4122)


def test_a_sane_caller_id_is_kept_else_a_new_one() -> None:
    new_id = RequestIds()
    assert request_id_of({"x-request-id": "my-id-1"}, new_id) == "my-id-1"
    for bad in ("", "x" * 129, "é-id"):
        assert uuid.UUID(request_id_of({"x-request-id": bad}, new_id)).version == 4


def test_a_forked_child_does_not_reuse_the_parents_batch() -> None:
    new_id = RequestIds()
    new_id()  # the batch is read; 255 ids wait in it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id must not be one of the parent's
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    parents = [new_id() for _ in range(255)]
    assert len(child) == 32 and child not in parents
