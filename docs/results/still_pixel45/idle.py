"""Diagnostic (forty-seventh session): any worldstream command with every stream step's action replaced by idle
(standing still), e.g. the shipped model's 1-minute idle stream:

    python docs/results/still_pixel45/idle.py bench stream --data pipeline/data/overworld --minutes 1 --out OUT
"""
import sys

from worldstream.cli import main
from worldstream.engine.stream import Stream

_step = Stream.step
Stream.step = lambda self, action=None, position=None: _step(self, "idle", position)
sys.exit(main(sys.argv[1:]))
