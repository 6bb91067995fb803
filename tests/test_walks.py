"""Action following is scored against the game replayed from the same start (eval/walks.py)."""
import numpy as np
import pytest

from worldstream.data.format import Dataset
from worldstream.eval.walks import WalkScore, game_walk, replayable, score_walk, wilson

DIRS = ("n", "ne", "e", "se", "s", "sw", "w", "nw")
OPPOSITE = dict(zip(DIRS, DIRS[4:] + DIRS[:4]))


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    from worldstream.data.record import RecordConfig, record
    from worldstream.worlds.overworld import OverworldConfig

    path = tmp_path_factory.mktemp("walks") / "ds"
    record(path, RecordConfig(world=OverworldConfig(width=64, height=64), episodes=4, frames=16), progress=False)
    return Dataset(path)


def test_replay_reproduces_the_recording(recording):
    ep = recording.episodes[1]
    assert replayable(ep)
    recs = ep.records()
    game = game_walk(ep, 3, [r["action"] for r in recs[4:]])
    px = recording.manifest["record_config"]["world"]["tile_px"]
    recorded = np.array([[r["state"]["x"], r["state"]["y"]] for r in recs[3:]]) * px
    np.testing.assert_allclose(game.positions, recorded, atol=1e-3)
    assert np.abs(np.stack(game.frames).astype(float) - ep.frames()[4:]).mean() < 1.0  # the same pictures (H.264 aside)


def test_the_game_agrees_with_itself_and_wrong_videos_fail(recording):
    # a clear day: the judge reads scroll from ground texture, which snow at night at 64x64 hides
    # (the eval reports the judge's agreement on the game's own walks next to every result)
    ep = next(e for e in recording.episodes if e.records()[5]["state"]["weather"] == "clear"
              and e.records()[5]["state"]["time"] != "night")
    own, frozen, backwards = WalkScore(), WalkScore(), WalkScore()
    for d in DIRS:
        game = game_walk(ep, 5, [f"walk_{d}"] * 24)
        own.add(score_walk(game.frames, d, game.positions))
        frozen.add(score_walk([game.frames[0]] * 24, d, game.positions))
        back = game_walk(ep, 5, [f"walk_{OPPOSITE[d]}"] * 24)
        backwards.add(score_walk(back.frames, d, game.positions))
    assert own.spans == 8 * 5 and own.rate >= 0.9
    assert frozen.moving_ok <= 0.1 * frozen.moving and frozen.stopped_ok == frozen.stopped  # standing still is right only where the game stops
    assert backwards.moving_ok <= 0.1 * backwards.moving


def test_wilson_interval():
    lo, hi = wilson(30, 44)
    assert lo < 30 / 44 < hi and 0.5 < lo and hi < 0.82
    assert wilson(0, 0) == (0.0, 1.0) and wilson(10, 10)[1] == 1.0


def test_periodic_texture_does_not_alias():
    """A dissolved world is often a tile-periodic texture (8 px): moving 6 px in 4 frames it also
    matches a 2 px move back. Judged frame to frame, the walk still reads forward."""
    tile = np.random.default_rng(0).integers(0, 255, (8, 8, 3)).astype(np.uint8)
    plane = np.tile(tile, (24, 24, 1))
    x = np.round(np.arange(25) * 1.5).astype(int)
    frames = [plane[20:84, 20 + o : 84 + o] for o in x[1:]]
    truth = np.stack([x, np.zeros_like(x)], 1).astype(float)
    s = score_walk(frames, "e", truth)
    assert s.moving == 5 and s.moving_ok == 5
