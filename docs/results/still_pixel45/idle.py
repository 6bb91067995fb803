"""Diagnostic: any worldstream command with every stream step's action replaced by idle (standing still)."""
import sys

from worldstream.cli import main
from worldstream.engine.stream import Stream

_step = Stream.step
Stream.step = lambda self, action=None, position=None: _step(self, "idle", position)
sys.exit(main(sys.argv[1:]))
