"""Fixtures shared by every suite: the real embedded stack, started once per run."""

from __future__ import annotations

import pytest
from stack import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """The embedded stack (`atelier dev`) on a free port with a fresh state folder."""
    s = Stack(tmp_path_factory.mktemp("atelier") / "state", name="session").start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def alice(stack):
    """A user created the way an admin does it, with their password and an API token."""
    password = stack.add_user("alice")
    return {"name": "alice", "password": password, "token": stack.user_token("alice")}
