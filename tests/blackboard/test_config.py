from __future__ import annotations

import pytest

from blackboard import ConfigError, Settings


def test_environment_overrides_defaults_and_arguments_override_both() -> None:
    env = {"BLACKBOARD_REDIS_URL": "redis://h:1/0", "BLACKBOARD_MAX_VALUE_BYTES": "2048"}
    settings = Settings.from_env(env)
    assert (settings.redis_url, settings.max_value_bytes) == ("redis://h:1/0", 2048)
    assert Settings.from_env(env, max_value_bytes=4096).max_value_bytes == 4096
    # None means "not given", never "reset": merge with `is not None`.
    assert Settings.from_env(env, redis_url=None).redis_url == "redis://h:1/0"
    assert Settings.from_env({}).redis_url is None


def test_bad_setting_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="BLACKBOARD_MAX_VALUE_BYTES"):
        Settings.from_env({"BLACKBOARD_MAX_VALUE_BYTES": "lots"})
