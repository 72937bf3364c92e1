"""Terraform checks: the real terraform, tflint and checkov, built or installed by
``make install-test`` (terraform_tools.py) into the cache, never mocked.

No provider can be downloaded on the build machines, so ``terraform init`` runs only
on the provider-free modules (node_pools, atelier/values); those are applied for real
with local state under pytest's tmp folder.
"""

from __future__ import annotations

import pytest
from terraform_tools import missing_tools, tool_paths


def _tool(name: str):
    if name in missing_tools():
        pytest.fail(f"{name} is not installed ({tool_paths()[name]} missing); run `make install-test` or "
                    "`python3 tests/terraform/terraform_tools.py` (terraform and tflint are built from the Go "
                    "module proxy once per machine)", pytrace=False)
    return tool_paths()[name]


@pytest.fixture(scope="session")
def terraform_bin():
    return _tool("terraform")


@pytest.fixture(scope="session")
def tflint_bin():
    return _tool("tflint")


@pytest.fixture(scope="session")
def checkov_bin():
    return _tool("checkov")
