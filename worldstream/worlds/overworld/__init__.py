"""The built-in world: endless, procedural, top-down, with sound and exact ground truth."""
from .conditions import SEASONS, TIMES, WEATHERS, Blend, Conditions
from .world import ACTIONS, Overworld, OverworldConfig, Step, action_index

__all__ = ["ACTIONS", "SEASONS", "TIMES", "WEATHERS", "Blend", "Conditions", "Overworld", "OverworldConfig",
           "Step", "action_index"]
