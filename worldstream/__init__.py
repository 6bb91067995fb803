"""worldstream: an open real-time world model and the toolkit around it.

    from worldstream import World
    world = World.load()  # the default model that ships with the package, or a checkpoint folder
    s = world.stream(prompt="a sunny meadow", seed=0)
    frame = s.step("walk_e").rgb
"""
__version__ = "0.1.0"

__all__ = ["World", "Stream", "StreamConfig", "Event", "EventError"]


def __getattr__(name: str):  # lazy: `import worldstream` stays light (no torch) for the CLI's startup
    if name in ("World", "Stream", "StreamConfig"):
        from .engine import stream

        return getattr(stream, name)
    if name in ("Event", "EventError"):
        from .engine import events

        return getattr(events, name)
    raise AttributeError(f"module 'worldstream' has no attribute {name!r}")
