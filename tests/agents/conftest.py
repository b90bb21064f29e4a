"""Fixtures of the agents tests: a scripted LLM server on loopback (see llmstub) and the
OpenAI adapter pointed at it."""

from collections.abc import AsyncIterator

import pytest
from blackboard.agents.providers import OpenAIModel
from llmstub import LLMStub, llm_stub

__all__ = ["gpt", "llm_stub"]


@pytest.fixture
async def gpt(llm_stub: LLMStub) -> AsyncIterator[OpenAIModel]:
    model = OpenAIModel("gpt-4o-mini", api_key="sk-test", base_url=llm_stub.openai_url, timeout=2)
    yield model
    await model.aclose()
