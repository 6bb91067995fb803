"""The built-in world: determinism, collisions, any size, sound in sync, exact view-at-position."""
import math

import numpy as np
import pytest

from worldstream.config import from_dict
from worldstream.worlds.overworld import ACTIONS, Conditions, Overworld, OverworldConfig
from worldstream.worlds.overworld.conditions import WEATHER_CHANGE
from worldstream.worlds.overworld.policy import explore
from worldstream.worlds.overworld.terrain import (BLOCKING_GROUND, BLOCKING_OBJECT, ROCK, SAND, WATER,
                                                  TileMap, building_at)


def _run(world, seed, frames):
    return [(s.frame.copy(), s.audio.copy(), s.state, s.caption, a) for s, a, _ in explore(world, seed, frames)]


def test_same_seed_same_episode_and_different_seed_differs():
    cfg = OverworldConfig(width=64, height=48)
    a = _run(Overworld(cfg), 5, 120)
    b = _run(Overworld(cfg), 5, 120)
    for (fa, aa, sa, ca, xa), (fb, ab, sb, cb, xb) in zip(a, b):
        assert np.array_equal(fa, fb) and np.array_equal(aa, ab)
        assert sa == sb and ca == cb and xa == xb
    c = _run(Overworld(cfg), 6, 120)
    assert not np.array_equal(a[0][0], c[0][0])
    other_world = _run(Overworld(OverworldConfig(width=64, height=48, seed=1)), 5, 10)
    assert not np.array_equal(a[0][0], other_world[0][0])


def test_terrain_is_rich_and_deterministic():
    m1, m2 = TileMap(3), TileMap(3)
    g1, o1, _ = m1.region(-300, -300, 600, 600)
    g2, o2, _ = m2.region(-300, -300, 600, 600)
    assert np.array_equal(g1, g2) and np.array_equal(o1, o2)
    # every ground kind except the building floor appears in a 600x600 patch; trees, rocks, flowers too
    assert set(np.unique(g1)) >= set(range(8))
    assert set(np.unique(o1)) >= set(range(7))
    # region() stitched from cached chunks equals a fresh generation of the same tiles
    g3, o3, _ = TileMap(3).region(-17, 5, 50, 40)
    assert np.array_equal(g3, g1[305:345, 283:333]) and np.array_equal(o3, o1[305:345, 283:333])
    buildings = [building_at(x, y, 3) for x in range(-20, 20) for y in range(-20, 20)]
    assert sum(b is not None for b in buildings) >= 10


def test_player_never_walks_through_blocking_tiles(small_world):
    w = small_world
    rng = np.random.default_rng(0)
    w.reset(seed=11)
    blocked_frames = 0
    for i in range(2000):
        s = w.step(int(rng.integers(len(ACTIONS))) if i % 30 else 0)
        half = w.config.player_half
        g, o, _ = w.map.region(int(math.floor(w.x - half)), int(math.floor(w.y - half)), 2, 2)
        x0, x1 = math.floor(w.x - half), math.floor(w.x + half)
        y0, y1 = math.floor(w.y - half), math.floor(w.y + half)
        g, o, _ = w.map.region(x0, y0, x1 - x0 + 1, y1 - y0 + 1)
        assert not BLOCKING_GROUND[g].any() and not BLOCKING_OBJECT[o].any(), f"inside an obstacle at frame {i}"
        blocked_frames += s.state["blocked"]
    assert blocked_frames > 0  # random walking does hit things


def test_water_stops_the_player():
    w = Overworld(OverworldConfig(width=64, height=64))
    g, o, _ = w.map.region(-200, -200, 400, 400)
    # a beach tile with open water directly east of it
    ys, xs = np.nonzero((g[:, :-1] == SAND) & (o[:, :-1] == 0) & (g[:, 1:] == WATER))
    x, y = xs[0] - 200 + 0.5, ys[0] - 200 + 0.5
    w.reset(seed=0, position=(x, y))
    for _ in range(24):
        s = w.step("walk_e")
    assert w.x < x + 1 - w.config.player_half + 1e-6  # stopped at the shore
    assert s.state["blocked"] and not s.state["moved"] and s.state["heading"] == "e"
    s = w.step("walk_w")
    assert s.state["moved"] and w.x < x + 0.5


@pytest.mark.parametrize("size", [(128, 128), (160, 120), (256, 144), (90, 70), (64, 128)])
def test_renders_any_size_and_aspect(size):
    w, h = size
    world = Overworld(OverworldConfig(width=w, height=h))
    s = world.reset(seed=1, conditions=Conditions())
    assert s.frame.shape == (h, w, 3) and s.frame.dtype == np.uint8
    # the player is drawn at the centre: hiding it changes only the centre tile
    bare = world.view_at(world.x, world.y, world.t, draw_player=False)
    diff = np.nonzero(np.any(bare != s.frame, axis=2))
    tp = world.config.tile_px
    assert len(diff[0]) > 0
    assert abs(diff[0].mean() - h / 2) < tp and abs(diff[1].mean() - w / 2) < tp


def test_zoom_changes_detail_not_layout():
    a = Overworld(OverworldConfig(width=64, height=64, tile_px=8)).reset(seed=2, conditions=Conditions()).frame
    b = Overworld(OverworldConfig(width=128, height=128, tile_px=16)).reset(seed=2, conditions=Conditions()).frame
    small = b.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
    assert np.abs(small - a.astype(float)).mean() < 20  # same place, twice the pixels per tile


def test_audio_length_and_footsteps_in_sync():
    cfg = OverworldConfig(width=64, height=64)
    w = Overworld(cfg)
    assert cfg.samples_per_frame == 1000
    g, o, _ = w.map.region(-300, -300, 600, 600)
    # a long run of open rock, far from water: footsteps are the loudest thing
    ys, xs = np.nonzero(np.all([(g[:, k:k - 12 or None] == ROCK) & (o[:, k:k - 12 or None] == 0) for k in range(12)], axis=0))
    x, y = xs[0] - 300 + 0.5, ys[0] - 300 + 0.5
    w.reset(seed=0, position=(x, y), conditions=Conditions(weather="clear", time="night"))
    energy, steps = [], []
    for _ in range(48):
        s = w.step("walk_e")
        assert s.audio.shape == (cfg.samples_per_frame,) and s.audio.dtype == np.float32
        assert np.all(np.abs(s.audio) <= 1.0)
        energy.append(float(np.sqrt(np.mean(s.audio**2))))
        steps.append(s.state["footstep"])
    energy, steps = np.array(energy), np.array(steps)
    assert steps.sum() >= 5
    # the frame a footstep starts is louder than the quiet frames between steps
    quiet = ~steps & ~np.roll(steps, 1) & ~np.roll(steps, 2)
    assert energy[steps].mean() > 3 * energy[quiet].mean()
    with pytest.raises(ValueError, match="multiple of fps"):
        OverworldConfig(fps=24, sample_rate=16000)


def test_rain_and_night_are_heard():
    cfg = OverworldConfig(width=64, height=64)
    w = Overworld(cfg)

    def loudness(c, hi_band):
        w.reset(seed=4, conditions=c)
        a = np.concatenate([w.step("idle").audio for _ in range(24)])
        spec = np.abs(np.fft.rfft(a)) ** 2
        f = np.fft.rfftfreq(len(a), 1 / cfg.sample_rate)
        return spec[(f > hi_band[0]) & (f < hi_band[1])].sum()

    clear_day, rain = loudness(Conditions(weather="clear"), (1500, 7000)), loudness(Conditions(weather="rain"), (1500, 7000))
    assert rain > 10 * clear_day
    day, night = (loudness(Conditions(time=t), (4400, 4600)) for t in ("noon", "night"))
    assert night > 10 * day  # crickets


def test_view_at_equals_the_episode_frame_for_any_place_and_time(small_world):
    w = small_world
    recorded = []
    for s, _, _ in explore(w, 3, 200):
        recorded.append((s.frame.copy(), dict(s.state), w.blend))
    for k in (0, 57, 133, 199):
        frame, st, blend = recorded[k]
        heading = ["n", "ne", "e", "se", "s", "sw", "w", "nw"].index(st["heading"])
        # step phase 0 frames (feet together) are the exact match; others differ only in the player's feet
        view = w.view_at(st["x"], st["y"], st["t"], blend, heading=heading, draw_player=False)
        bare = frame.copy()
        c = w.config
        tp = c.tile_px
        sl = np.s_[c.height // 2 - tp : c.height // 2 + tp, c.width // 2 - tp : c.width // 2 + tp]
        bare[sl] = view[sl]  # the player's tile is the only difference
        assert np.array_equal(view, bare), f"frame {k}"
    # the ground truth view of a place is the same whenever it is asked for (pure function)
    a = w.view_at(10.5, -3.5, 12.0, Conditions())
    w.step("walk_n")
    assert np.array_equal(a, w.view_at(10.5, -3.5, 12.0, Conditions()))


def test_conditions_blend_over_about_a_second_with_varied_captions():
    cfg = OverworldConfig(width=48, height=48, fps=24)
    w = Overworld(cfg)
    w.reset(seed=0, conditions=Conditions(weather="clear"))
    caption = w.set_conditions(weather="snow")
    assert caption in WEATHER_CHANGE["snow"]
    s = w.step("idle")
    assert s.caption == caption
    weights = [s.state["blend"]["weather"]["snow"]]
    for _ in range(30):
        weights.append(w.step("idle").state["blend"]["weather"]["snow"])
    assert 0 < weights[0] < 0.1 and 0.4 < weights[11] < 0.6 and weights[24] == 1.0
    assert np.all(np.diff(weights) >= 0)
    captions = {w.set_conditions(weather=v) for _ in range(20) for v in ("rain", "snow")}
    assert len(captions) >= 12
    with pytest.raises(ValueError, match="unknown weather"):
        w.set_conditions(weather="hail")
    with pytest.raises(ValueError, match="unknown action"):
        w.step("jump")


def test_explorer_loops_back_to_earlier_places():
    w = Overworld(OverworldConfig(width=48, height=48))
    revisits, blocked, n = [], 0, 24 * 100
    for seed in (0, 1, 2):
        where = []
        for s, _, revisit_of in explore(w, seed, n):
            where.append((s.state["x"], s.state["y"]))
            blocked += s.state["blocked"] and not s.state["moved"]
            if revisit_of is not None:
                revisits.append((s.state["frame"], revisit_of))
                (x0, y0), (x1, y1) = where[revisit_of], where[-1]
                assert math.hypot(x1 - x0, y1 - y0) < 1.0  # back at the place seen then
    assert len(revisits) >= 3, f"only {len(revisits)} loop-backs arrived in 3 x 100 s"
    for now, then in revisits:
        assert 10 * 24 <= now - then
    assert blocked < 0.15 * 3 * n  # bumps happen but the explorer does not get stuck


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown key"):
        from_dict(OverworldConfig, {"width": 64, "colour": "blue"})
    assert from_dict(OverworldConfig, {"width": 64}).width == 64


def test_gymnasium_env_passes_the_checker():
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    from worldstream.worlds.overworld.env import register

    register()
    env = gym.make("worldstream/Overworld-v0", width=64, height=48, max_frames=20)
    check_env(env.unwrapped)
    obs, info = env.reset(seed=0)
    assert obs.shape == (48, 64, 3) and info["audio"].shape == (1000,)
    for _ in range(20):
        obs, r, term, trunc, info = env.step(env.action_space.sample())
    assert trunc and not term and "x" in info["state"]


def test_explorer_pushes_into_obstacles_when_asked_and_is_unchanged_otherwise():
    """``push_share``: some bumps become long pushes (a key held against water or rock); at 0 the
    explorer draws no extra random numbers, so recordings stay exactly as they were."""
    from worldstream.worlds.overworld.policy import ExplorerConfig

    w = Overworld(OverworldConfig(width=48, height=48))

    def runs(cfg, seed):
        acts, out, run = [], [], 0
        for s, a, _ in explore(w, seed, 24 * 60, cfg):
            acts.append(a)
            if s.state["blocked"] and a != 0:
                run += 1
            elif run:
                out.append(run)
                run = 0
        return acts, out

    default, short = runs(None, 5)
    assert runs(ExplorerConfig(push_share=0.0), 5)[0] == default  # the same episode
    assert short and max(short) <= 5  # turns away after bump_frames
    long = [r for seed in (5, 6) for r in runs(ExplorerConfig(push_share=1.0, push_seconds=(1.5, 1.5)), seed)[1]]
    assert max(long) >= 30  # held against the obstacle for over a second


def test_streaks_find_a_repeated_border_and_not_the_ground():
    """``eval.stream.streaks`` (how a walk's repeated border shows): the world's own frames have almost none;
    a frame moved left 3 px at a time with its border repeated has a streak as wide as it moved."""
    import torch

    from worldstream.eval.stream import streaks
    from worldstream.model.omni import move_frames

    frames = np.stack([f for f, *_ in _run(Overworld(OverworldConfig(width=128, height=128)), 3, 40)][::8])
    assert streaks(frames) < 0.02
    z = torch.from_numpy(frames[:1]).permute(0, 3, 1, 2).float()[None]
    for _ in range(8):  # 24 px of repeated border on the right
        z = move_frames(z, torch.tensor([[[0.0, -3.0]]]))
    moved = z[0].permute(0, 2, 3, 1).round().byte().numpy()
    assert streaks(moved) > 0.12
