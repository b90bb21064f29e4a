from __future__ import annotations

import pytest
from bbtest import build_app

from blackboard import App


@pytest.fixture
def app() -> App:
    return build_app()
