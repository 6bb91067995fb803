"""The action vocabulary: discrete actions (and optional continuous axes) read from a dataset
manifest, with the mapping from keyboard keys that the browser front end uses.

Keyboard mapping (documented in docs/tokenizers.md):

* Movement keys: W / ArrowUp = up, S / ArrowDown = down, A / ArrowLeft = left,
  D / ArrowRight = right; two keys give a diagonal. Shift = run. Space = fire / jump.
* Overworld-style names (``idle``, ``walk_<dir>``, ``run_<dir>`` with dir in n ne e se s sw w nw)
  map from the movement direction and Shift.
* Other names (e.g. Atari's ``noop``, ``up``, ``rightfire``) are read as the set of words they
  contain (up, down, left, right, fire, ...); the action whose word set equals what is pressed
  wins, else the one matching most pressed words, else action 0.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable

KEY_WORDS = {
    "w": "up", "arrowup": "up", "s": "down", "arrowdown": "down",
    "a": "left", "arrowleft": "left", "d": "right", "arrowright": "right",
    " ": "fire", "space": "fire", "shift": "run", "e": "use", "q": "back",
}
_DIRS = {frozenset({"up"}): "n", frozenset({"up", "right"}): "ne", frozenset({"right"}): "e",
         frozenset({"down", "right"}): "se", frozenset({"down"}): "s", frozenset({"down", "left"}): "sw",
         frozenset({"left"}): "w", frozenset({"up", "left"}): "nw"}
_WORDS = ("noop", "idle", "up", "down", "left", "right", "fire", "jump", "run", "use", "back")


def _words(name: str) -> frozenset[str]:
    found = set(re.findall("|".join(sorted(_WORDS, key=len, reverse=True)), name.lower()))
    found.discard("noop")
    found.discard("idle")
    if "jump" in found:
        found = (found - {"jump"}) | {"fire"}
    return frozenset(found)


@dataclasses.dataclass(frozen=True)
class ActionVocab:
    """Discrete action names (ids are positions) and continuous axis names."""

    names: tuple[str, ...]
    axes: tuple[str, ...] = ()

    @staticmethod
    def from_manifest(manifest: dict[str, Any]) -> "ActionVocab":
        a = manifest.get("actions")
        if not isinstance(a, dict) or not isinstance(a.get("names"), list):
            raise ValueError("manifest has no 'actions': {'names': [...], 'axes': [...]}")
        return ActionVocab(tuple(a["names"]), tuple(a.get("axes", [])))

    def __len__(self) -> int:
        return len(self.names)

    def index(self, action: int | str) -> int:
        """Id of an action given by name or id; a clear error for anything else."""
        if isinstance(action, bool):
            raise ValueError(f"action must be a name or an id, not {action!r}")
        if isinstance(action, int):
            if 0 <= action < len(self.names):
                return action
            raise ValueError(f"action id {action} out of range 0..{len(self.names) - 1}")
        if isinstance(action, str) and action in self.names:
            return self.names.index(action)
        raise ValueError(f"unknown action {action!r}; known: {', '.join(self.names)}")

    def from_keys(self, pressed: Iterable[str]) -> int:
        """The action id for a set of pressed keyboard keys (browser ``KeyboardEvent.key`` values)."""
        words = {KEY_WORDS[k.lower()] for k in pressed if k.lower() in KEY_WORDS}
        move = frozenset(words & {"up", "down", "left", "right"})
        if {"up", "down"} <= move:
            move -= {"up", "down"}
        if {"left", "right"} <= move:
            move -= {"left", "right"}
        if "walk_n" in self.names:  # overworld-style vocabulary
            d = _DIRS.get(frozenset(move))
            if d is None:
                return self.names.index("idle") if "idle" in self.names else 0
            name = f"{'run' if 'run' in words else 'walk'}_{d}"
            return self.names.index(name) if name in self.names else self.names.index(f"walk_{d}")
        want = frozenset(move | (words & {"fire", "use", "back"}))
        best, best_score = 0, -1
        for i, n in enumerate(self.names):
            w = _words(n)
            score = 100 if w == want else len(w & want) - len(w - want)
            if score > best_score:
                best, best_score = i, score
        return best
