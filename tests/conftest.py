import os

import pytest

os.environ.setdefault("PYTHONHASHSEED", "0")


@pytest.fixture(scope="session")
def small_world():
    from worldstream.worlds.overworld import Overworld, OverworldConfig

    return Overworld(OverworldConfig(width=96, height=64))
