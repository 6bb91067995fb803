"""`worldstream eval suite`: several models side by side, resumable, with a clear error for a bad spec."""
import json

import pytest

from worldstream.eval import suite
from worldstream.eval.suite import SuiteConfig, parse_spec, run_suite

TINY = SuiteConfig(clips=1, walk_frames=4, walk_starts=1, prompt_starts=1, prompt_frames=3, revisit_episodes=1, revisit_seconds=0.5,
                   drift_minutes=0.004, speed_chunks=3, judge_renders=16, judge_steps=2, audio_frames=4)


def test_suite_table_json_plot_and_resume(tiny_teacher, latent_dataset, tmp_path, monkeypatch):
    specs = [parse_spec(f"teacher={tiny_teacher},sampler=euler,steps=1"),
             parse_spec(f"dense={tiny_teacher},sampler=x0,steps=1,text=1,action=1,topk=64")]
    res = run_suite(specs, str(latent_dataset), tmp_path, TINY, progress=False, log=lambda *a: None)
    rows = [x for x in res["table"].splitlines() if x.startswith("| teacher") or x.startswith("| dense")]
    assert len(rows) == 2 and "mem top-64" in rows[0] + rows[1]
    saved = json.loads((tmp_path / "models" / "dense.json").read_text())
    assert saved["view"]["memory_topk"] == 64 and saved["rollout"]["sampler"] == "x0"
    q = saved["quality"]
    assert 0 < q["next_frame_ssim"] <= 1 and q["audio_spectral_distance_db"] > 0 and saved["drift"]["per_minute"]
    assert (tmp_path / "drift.png").stat().st_size > 0 and (tmp_path / "suite.md").exists()
    monkeypatch.setattr(suite, "evaluate_model", lambda *a, **k: pytest.fail("measured twice"))
    again = run_suite(specs, str(latent_dataset), tmp_path, TINY, progress=False, log=lambda *a: None)
    assert again["table"] == res["table"]  # results on disk are reused
    monkeypatch.undo()
    quick = run_suite([parse_spec(f"nospeed={tiny_teacher},sampler=x0,steps=1,text=1,action=1")], str(latent_dataset), tmp_path,
                      SuiteConfig(**{**TINY.__dict__, "speed_chunks": 0, "revisit_episodes": 0, "drift_minutes": 0}),
                      progress=False, log=lambda *a: None)
    assert "| nospeed | x0 x1, mem top-2 | – | – |" in quick["table"]


@pytest.mark.parametrize("bad", ["noequals", "x=", "x=p,steps=two", "x=p,colour=red"])
def test_bad_model_spec_says_what_to_write(bad):
    with pytest.raises(ValueError, match="model spec"):
        parse_spec(bad)


def test_prompt_starts_skip_a_world_already_in_the_asked_for_condition(tiny_teacher, latent_dataset):
    import numpy as np

    from worldstream.data.latents import LatentClips
    from worldstream.engine.generate import load_world_model
    from worldstream.eval.teacher import _prompt_starts
    from worldstream.worlds.overworld.conditions import WEATHERS

    _, meta = load_world_model(tiny_teacher)
    lat = LatentClips(str(latent_dataset), meta["train"]["latents"], "heldout", 2, seed=7)
    ep, f = lat.fixed(1, seed=300).start[0]  # the first start of prompt 0 (seed as before)
    blend = ep.records()[f]["state"]["blend"]["weather"]
    here, other = WEATHERS[int(np.argmax(blend))], WEATHERS[int(np.argmin(blend))]
    assert max(blend) >= 0.5 and min(blend) < 0.5
    key = lambda c: (c.start[0][0].name, c.start[0][1])  # noqa: E731
    kept, there = _prompt_starts(lat, 0, "weather", other, 0, 3)
    assert key(kept[0]) == (ep.name, f) and there == 0  # not in the condition: the start as before
    starts, there = _prompt_starts(lat, 0, "weather", here, 0, 3)
    in_it = [c.start[0][0].records()[c.start[0][1]]["state"]["blend"]["weather"][WEATHERS.index(here)] >= 0.5
             for c in starts]
    assert len(starts) == 3 and sum(in_it) == there  # every start in the condition is counted ...
    assert in_it == sorted(in_it)  # ... and comes only after every start that is not
