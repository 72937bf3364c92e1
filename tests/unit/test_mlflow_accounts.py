"""The MLflow front's accounts when a hub user goes: the order of the front's own steps
(the calls it would send MLflow are recorded here; the integration test
``test_s3_trino_identity.py::test_a_removed_users_keys_and_token_stop_working`` runs the
same against the real MLflow)."""

from __future__ import annotations

import asyncio
import time

import pytest
from atelier_hub.services.mlflow_accounts import Accounts, DerivedCredentials
from tornado import web


class _Recorded(Accounts):
    """Accounts whose calls to MLflow are written down and answered 200."""

    def __init__(self):
        super().__init__(credentials=DerivedCredentials("admin-secret"), backend=None, prefix="/services/mlflow")
        self.calls: list[tuple[str, str, dict]] = []

    async def call(self, method, path, body, *, as_user="admin"):
        self.calls.append((method, path, body))
        return 200, {}


def _deleted(accounts: _Recorded) -> list[str]:
    return [body["username"] for method, path, body in accounts.calls if path.endswith("/users/delete")]


def test_a_leaving_users_account_goes_after_their_request_at_mlflow_and_their_token_is_refused():
    async def scenario():
        accounts = _Recorded()
        await accounts.authorization("ben", False)
        await accounts.authorization("alice", False)
        accounts.begin("ben")  # ben's request is at MLflow as the hub stops listing him
        removal = asyncio.create_task(accounts.remove_gone({"alice"}, time.monotonic()))
        await asyncio.sleep(0.5)
        assert _deleted(accounts) == []  # not while MLflow still serves him (it would answer 404)
        # A token of his that the front's cache still takes does not make the account again.
        with pytest.raises(web.HTTPError) as refused:
            await accounts.authorization("ben", False)
        assert refused.value.status_code == 403 and "no longer a user" in refused.value.log_message
        accounts.end("ben")
        assert await asyncio.wait_for(removal, 5) == ["ben"]
        assert _deleted(accounts) == ["ben"]
        await accounts.authorization("alice", False)  # alice is served throughout
        # A new user of that name, once the hub lists them, gets an account again.
        assert await accounts.remove_gone({"alice", "ben"}, time.monotonic()) == []
        calls = len(accounts.calls)
        await accounts.authorization("ben", False)
        assert ("POST", "/api/2.0/mlflow/users/create") in [(m, p) for m, p, _ in accounts.calls[calls:]]

    asyncio.run(scenario())
