"""Fixtures of the agents tests: a scripted LLM server on loopback (see llmstub)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from llmstub import LLMStub


@pytest.fixture
def llm_stub() -> Iterator[LLMStub]:
    with LLMStub() as stub:
        yield stub
