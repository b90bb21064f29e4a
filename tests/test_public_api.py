"""Each package's __all__ is the public API: complete, sorted, and importable."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = [
    "blackboard",
    "blackboard.agents",
    "blackboard.agents.providers",
    "blackboard.supervisor",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_importable(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported)
    for symbol in exported:
        assert hasattr(module, symbol), symbol


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_every_public_name(name: str) -> None:
    module = importlib.import_module(name)
    public = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and not isinstance(v, type(importlib))
    }
    assert public <= set(module.__all__), public - set(module.__all__)
