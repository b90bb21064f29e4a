"""Fixtures of the examples tests: a scripted LLM server on loopback (see llmstub)."""

from llmstub import llm_stub

__all__ = ["llm_stub"]
