"""Diagnostic (forty-seventh session): any worldstream command with the whole-pixel move model's ground fill
switched off (what a move uncovers repeats the border instead), e.g.

    python docs/results/pixel47/noground.py bench stream --data pipeline/data/overworld --minutes 1 \
        --checkpoint pipeline/runs/pixel47 --out OUT
"""
import sys

import worldstream.engine.stream as stream
from worldstream.cli import main

stream.ground_for = lambda *a, **k: None
sys.exit(main(sys.argv[1:]))
