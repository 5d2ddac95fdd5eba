"""Shared test setup: integration tests need root and create (and always remove) their own namespaces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "rules" / "example.yaml"

pytest_plugins = ["tests.labfixture"]  # fixtures `lab`, `lab_fw`, `make_lab` (netfwd.lab)


@pytest.fixture(autouse=True, scope="session")
def _repo_cwd():
    """Tests refer to bundled files by their repository-relative paths (rules/example.yaml)."""
    os.chdir(REPO)


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root for network namespaces")
    for item in items:
        if "netns" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def example_spec():
    from netfwd.spec import load_spec

    return load_spec(EXAMPLE)
