"""What counts as Redis being away, and the one policy every long-running loop uses to
ride it out: back off exponentially with jitter (50 ms doubling to 2 s), log each wait,
and try again, never crash. A loop's step is retried, not the loop: a step that succeeds
starts the next one from the shortest wait again."""

from __future__ import annotations

import logging
from collections.abc import Callable

from redis import exceptions as redis_errors
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_never,
    wait_exponential,
    wait_random,
)
from tenacity.stop import StopBaseT

from blackboard.errors import StoreUnavailable

__all__ = ["OUTAGE", "ride_out"]

OUTAGE = (
    StoreUnavailable,
    redis_errors.ConnectionError,  # not a subclass of the built-in ConnectionError
    redis_errors.TimeoutError,  # (BusyLoadingError, during a restart, is one of these)
    ConnectionError,
    TimeoutError,
    OSError,
)
"""What a worker loop treats as Redis being away: back off and try again, never crash."""

FIRST_WAIT_S = 0.05
LONGEST_WAIT_S = 2.0


def ride_out(
    what: str,
    log: logging.Logger,
    *,
    stop: StopBaseT = stop_never,
    before_retry: Callable[[RetryCallState], None] | None = None,
) -> AsyncRetrying:
    """The retry policy for one step of a loop that must outlive a Redis outage: retry on
    :data:`OUTAGE` only (anything else propagates at once), waiting 50 ms doubling to 2 s
    with jitter, logging ``"<what>: Redis unavailable, retrying: <error>"`` before each
    wait. ``stop`` bounds it (an activation's deadline, say); when it stops, the last
    outage is re-raised as it was. ``before_retry`` runs before each wait (to reset what
    the next attempt reads, say).

    Use: ``async for attempt in ride_out("agent a", log): with attempt: await step()``.
    """

    def tell(state: RetryCallState) -> None:
        failed = state.outcome.exception() if state.outcome else None
        log.warning("%s: Redis unavailable, retrying: %s", what, failed)
        if before_retry is not None:
            before_retry(state)

    return AsyncRetrying(
        retry=retry_if_exception_type(OUTAGE),
        # (not wait_exponential_jitter: its 'initial' warns on tenacity 9.1+, 'multiplier'
        # is missing before; this sum is the same wait on every version we allow)
        wait=wait_exponential(multiplier=FIRST_WAIT_S, max=LONGEST_WAIT_S)
        + wait_random(0, FIRST_WAIT_S),
        stop=stop,
        before_sleep=tell,
        reraise=True,
    )
