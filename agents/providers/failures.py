"""Provider failures, classified into the framework's errors.

Both official SDKs raise the same shapes of exception (a status error carrying the HTTP
response, a timeout, a connection error), so one mapping serves both:

- 429, 408, 409 and 5xx (529: Anthropic overloaded), timeouts and dropped connections are
  :class:`TransientError`; a 429's Retry-After rides along as ``retry_after`` so the
  runtime's backoff waits at least that long.
- every other 4xx is :class:`FatalError` with the provider's own message: the request is
  wrong (bad model name, key, parameter) and sending it again cannot help.

The SDKs' own retries are off (``max_retries=0``): the runtime's policy, bounded by the
activation's deadline, is the one retry layer.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from blackboard.errors import AgentError, FatalError, SemanticError, TransientError

__all__ = ["classify", "cut_off", "retry_after"]

RETRYABLE_STATUS = frozenset({408, 409, 429})


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``retry-after`` (seconds or a date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:  # an HTTP date, or something no server should send
        parsed = email.utils.parsedate_tz(raw)
        return None if parsed is None else max(0.0, email.utils.mktime_tz(parsed) - time.time())


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return str(inner["message"])
    return str(getattr(exc, "message", "") or exc)


def classify(sdk: ModuleType, provider: str, exc: Exception) -> AgentError:
    """The framework error for one of the SDK's exceptions (its ``APIError``)."""
    if isinstance(exc, sdk.APITimeoutError):
        return TransientError(f"{provider} request timed out; it will be retried.")
    if isinstance(exc, sdk.APIConnectionError):
        cause = exc.__cause__ or exc
        return TransientError(
            f"{provider} connection failed ({type(cause).__name__}: {cause}); it will be retried."
        )
    if isinstance(exc, sdk.APIStatusError):
        status = int(exc.status_code)
        message = _message(exc)
        if status in RETRYABLE_STATUS or status >= 500:
            wait = retry_after(exc.response.headers)
            hint = f" (retry after {wait:g} s)" if wait is not None else ""
            return TransientError(
                f"{provider} answered HTTP {status}: {message}{hint}; it will be retried.",
                retry_after=wait,
            )
        return FatalError(
            f"{provider} rejected the request with HTTP {status}: {message}. Retrying cannot "
            "help: fix the model spec, the key or the request."
        )
    # anything else of the SDK's, e.g. an answer that does not parse as the API's
    return FatalError(f"{provider} answered something unusable: {exc}.")


def cut_off(max_tokens: int | None) -> SemanticError:
    """The error for an answer the provider stopped at the token cap (OpenAI's finish
    reason ``length``, Anthropic's stop reason ``max_tokens``): whatever it holds is
    incomplete, so it is not parsed; the rewrite asks for a shorter answer, and the
    message tells the operator what to change if that cannot be enough."""
    cap = f"max_tokens ({max_tokens})" if max_tokens is not None else "the server's max_tokens"
    return SemanticError(
        f"the answer was cut off at {cap} before it was complete; answer more briefly. "
        "If it cannot be shorter, raise the model's max_tokens or shorten the input "
        "(fewer or smaller keys read)."
    )
