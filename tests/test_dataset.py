"""The dataset format: round trip, resume, import of bad files, third-party gym recording, CLI."""
import gzip
import json
import shutil

import numpy as np
import pytest

from worldstream.data.format import Dataset, DatasetError
from worldstream.data.gym_record import GymRecordConfig, record_gym
from worldstream.data.importer import ImportConfig, import_videos
from worldstream.data.record import RecordConfig, record
from worldstream.data.video import read_wav, write_preview_mp4
from worldstream.worlds.overworld import Overworld, OverworldConfig
from worldstream.worlds.overworld.policy import explore

WORLD = OverworldConfig(width=64, height=48)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    path = tmp_path_factory.mktemp("ds") / "overworld"
    record(path, RecordConfig(world=WORLD, episodes=3, frames=60), workers=1, progress=False)
    return path


def test_round_trip_is_exact(recorded):
    ds = Dataset(recorded)
    assert len(ds) == 3 and ds.manifest["total_frames"] == 180
    m = ds.manifest
    assert (m["fps"], m["sample_rate"], m["samples_per_frame"]) == (24, 24000, 1000)
    assert m["resolutions"] == [[64, 48]] and m["actions"]["names"][0] == "idle"
    ep = ds.episodes[1]
    frames, audio, recs = ep.frames(), ep.audio(), ep.records()
    assert frames.shape == (60, 48, 64, 3) and audio.shape == (60 * 1000,)
    # what the world produced for this episode, frame for frame
    world = Overworld(WORLD)
    for k, (s, action, _) in enumerate(explore(world, 1, 60)):
        assert np.array_equal(frames[k], s.frame), f"frame {k} not lossless"
        assert np.abs(audio[k * 1000 : (k + 1) * 1000] - s.audio).max() <= 1 / 32767 + 1e-6
        assert recs[k]["action"] == action and recs[k]["frame"] == k
        assert recs[k]["state"]["x"] == s.state["x"] and recs[k]["caption"] == s.caption
    assert recs[0]["caption"]  # the opening scene is always described
    assert ep.info["captions"][0] == {"frame": 0, "text": recs[0]["caption"]}
    # readable without worldstream: plain gzip + JSON, a standard WAV
    with gzip.open(ep.path / "records.jsonl.gz", "rt") as f:
        assert json.loads(f.readline())["frame"] == 0
    _, sr = read_wav(ep.path / "audio.wav")
    assert sr == 24000
    # the decoded cache is reused (memory-mapped) on the second read
    assert isinstance(ep.frames(), np.memmap)


def test_heldout_split(recorded):
    ds = Dataset(recorded)
    assert all(e.info["split"] == "train" for e in ds.episodes)  # episode 9 would be the first held out
    from worldstream.data.format import split_of

    assert [split_of(i) for i in range(20)].count("heldout") == 2


def test_record_resumes_and_refuses_other_settings(recorded, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(recorded, copy)
    before = (copy / "episodes" / "000002" / "video.mp4").read_bytes()
    shutil.rmtree(copy / "episodes" / "000002")
    (copy / "episodes" / "000002.partial").mkdir()  # debris of an interrupted run
    m = record(copy, RecordConfig(world=WORLD, episodes=3, frames=60), workers=1, progress=False)
    assert m["_recorded_frames"] == 60 and len(m["episodes"]) == 3
    assert (copy / "episodes" / "000002" / "video.mp4").read_bytes() == before  # identical to the first run
    assert not (copy / "episodes" / "000002.partial").exists()
    with pytest.raises(DatasetError, match="other settings"):
        record(copy, RecordConfig(world=OverworldConfig(width=32, height=32), episodes=3, frames=60), progress=False)
    from worldstream.worlds.overworld.policy import ExplorerConfig

    with pytest.raises(DatasetError, match="explorer.push_share"):  # another recording policy is another dataset
        record(copy, RecordConfig(world=WORLD, episodes=3, frames=60, explorer=ExplorerConfig(push_share=0.5)),
               progress=False)


def test_a_heldout_only_recording_holds_just_the_heldout_episodes(tmp_path):
    """``--heldout-only``: of the first 10 episodes only episode 9, the same frames as in a full recording."""
    m = record(tmp_path / "held", RecordConfig(world=WORLD, episodes=10, frames=12), workers=1, progress=False,
               heldout_only=True)
    assert [e["name"] for e in m["episodes"]] == ["000009"] and m["episodes"][0]["split"] == "heldout"
    assert Dataset(tmp_path / "held").split("heldout")[0].n_frames == 12
    full = tmp_path / "full"
    from worldstream.data.record import record_episode

    record_episode(Overworld(WORLD), 9, 12, full, RecordConfig(world=WORLD).explorer)
    assert (full / "episodes" / "000009" / "video.mp4").read_bytes() == \
        (tmp_path / "held" / "episodes" / "000009" / "video.mp4").read_bytes()


def test_parallel_workers_record_the_same_data(recorded, tmp_path):
    m = record(tmp_path / "par", RecordConfig(world=WORLD, episodes=3, frames=60), workers=2, progress=False)
    assert len(m["episodes"]) == 3
    for k in range(3):
        a = (recorded / "episodes" / f"{k:06d}" / "video.mp4").read_bytes()
        b = (tmp_path / "par" / "episodes" / f"{k:06d}" / "video.mp4").read_bytes()
        assert a == b


def _world_clip(n, fps=30, size=(80, 64)):
    w = Overworld(OverworldConfig(width=size[0], height=size[1], fps=fps))
    frames, audio = [], []
    for s, _, _ in explore(w, 0, n):
        frames.append(s.frame)
        audio.append(s.audio)
    return frames, np.concatenate(audio)


def test_import_keeps_good_videos_and_reports_each_bad_one(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    frames, audio = _world_clip(45)
    write_preview_mp4(src / "good.mp4", frames, audio, 30, 24000)
    (src / "good.json").write_text(json.dumps({"actions": ["right"] * 45, "captions": [{"frame": 15, "text": "it rains"}]}))
    write_preview_mp4(src / "silent.mp4", frames[:20], None, 30, 24000)  # no sidecar, no audio: still fine
    data = (src / "good.mp4").read_bytes()
    (src / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (src / "garbage.mkv").write_bytes(b"\x00\x01 this is not a video")
    write_preview_mp4(src / "mismatch.mp4", frames[:20], None, 30, 24000)
    (src / "mismatch.json").write_text(json.dumps({"actions": ["left"] * 7}))
    write_preview_mp4(src / "unknown.mp4", frames[:10], None, 30, 24000)
    (src / "unknown.json").write_text(json.dumps({"actions": ["fly"] * 10}))
    write_preview_mp4(src / "badjson.mp4", frames[:10], None, 30, 24000)
    (src / "badjson.json").write_text("{actions: oops")
    (src / "actions.json").write_text(json.dumps(["left", "right", "idle"]))
    out = tmp_path / "ds"
    summary = import_videos(src, out, ImportConfig(fps=24))
    assert sorted(summary.imported) == ["good.mp4", "silent.mp4"]
    reasons = dict(summary.skipped)
    assert set(reasons) == {"truncated.mp4", "garbage.mkv", "mismatch.mp4", "unknown.mp4", "badjson.mp4"}
    assert "corrupt" in reasons["truncated.mp4"] and "corrupt" in reasons["garbage.mkv"]
    assert "7 actions" in reasons["mismatch.mp4"] and "20 frames" in reasons["mismatch.mp4"]
    assert "'fly'" in reasons["unknown.mp4"] and "not valid JSON" in reasons["badjson.mp4"]
    assert "SKIPPED truncated.mp4" in summary.report()
    assert not list((out / "episodes").glob("*.partial"))  # nothing half-written is left behind
    ds = Dataset(out)
    good = next(e for e in ds.episodes if e.info["source_file"] == "good.mp4")
    assert good.n_frames == 36  # 45 frames at 30 fps = 1.5 s = 36 frames at 24 fps
    assert good.frames().shape == (36, 64, 80, 3)  # 80x64 is already a multiple of 16: native size kept
    assert set(good.actions()) == {1}  # "right"
    assert good.info["captions"] == [{"frame": 12, "text": "it rains"}]  # source frame 15 at 30 fps -> 12 at 24
    assert np.abs(good.audio()).max() > 0.01 and good.audio().shape == (36 * 1000,)
    silent = next(e for e in ds.episodes if e.info["source_file"] == "silent.mp4")
    assert np.all(silent.actions() == -1) and not silent.info["has_audio"]
    # resumable: a second run imports nothing new and keeps everything
    again = import_videos(src, out, ImportConfig(fps=24))
    assert sorted(again.already) == ["good.mp4", "silent.mp4"] and not again.imported
    # a required sidecar that is missing is a skip with a reason, not a crash
    strict = import_videos(src, tmp_path / "strict", ImportConfig(fps=24, sidecar="required"))
    assert "missing sidecar silent.json" in dict(strict.skipped)["silent.mp4"]


def test_import_resizes_to_native_aspect_multiple_of_16(tmp_path):
    src = tmp_path / "v"
    src.mkdir()
    frames, audio = _world_clip(12, fps=24, size=(320, 180))
    write_preview_mp4(src / "wide.mp4", frames, audio, 24, 24000)
    import_videos(src, tmp_path / "ds", ImportConfig(max_side=256))
    ep = Dataset(tmp_path / "ds").episodes[0]
    assert (ep.info["width"], ep.info["height"]) == (256, 144)  # 16:9 kept, no square crop


def test_record_third_party_gym_env_with_sound(tmp_path):
    m = record_gym(tmp_path / "pong", GymRecordConfig("ALE/Pong-v5", episodes=2, frames=40), progress=False)
    assert m["fps"] == 30 and m["actions"]["names"][:2] == ["noop", "fire"]
    ds = Dataset(tmp_path / "pong")
    ep = ds.episodes[0]
    assert ep.frames().shape == (40, 208, 160, 3)  # 210 rows cropped to a multiple of 16
    assert ep.audio().shape == (40 * 800,) and np.abs(ep.audio()).max() > 0  # the game's own sound
    assert len(ep.actions()) == 40 and ep.actions().max() < 6
    with pytest.raises(DatasetError, match="cannot make|not discrete|render"):
        record_gym(tmp_path / "bad", GymRecordConfig("NoSuchEnv-v0", episodes=1, frames=5), progress=False)


def test_dataset_errors_name_the_file(recorded, tmp_path):
    with pytest.raises(DatasetError, match="manifest.json: not found"):
        Dataset(tmp_path / "nothing")
    copy = tmp_path / "c"
    shutil.copytree(recorded, copy, ignore=shutil.ignore_patterns(".cache"))
    (copy / "episodes" / "000000" / "video.mp4").write_bytes(b"broken")
    with pytest.raises(Exception, match="000000/video.mp4"):
        Dataset(copy).episodes[0].frames()
    assert Dataset(copy).episodes[1].frames().shape[0] == 60  # the others still read


def test_cli_record_info_preview(tmp_path, capsys):
    from worldstream.cli import main

    out = tmp_path / "cli"
    assert main(["record", "--out", str(out), "--episodes", "2", "--frames", "24", "--size", "32x32",
                 "--workers", "1"]) == 0
    assert main(["info", str(out), "--check"]) == 0
    assert "2 good, 0 bad" in capsys.readouterr().out
    assert main(["preview", "--dataset", str(out), "--episode", "1", "--out", str(tmp_path / "p.mp4")]) == 0
    assert (tmp_path / "p.mp4").stat().st_size > 1000 and (tmp_path / "p.png").exists()
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    # settings that would leave an empty dataset, divide by zero or fail after the work: clear errors, nothing made
    capsys.readouterr()
    assert main(["record", "--out", str(tmp_path / "none"), "--episodes", "0"]) == 2
    assert "record 1 or more" in capsys.readouterr().err and not (tmp_path / "none").exists()
    assert main(["import", str(tmp_path), "--out", str(tmp_path / "imp"), "--fps", "0"]) == 2
    assert "fps 0" in capsys.readouterr().err and not (tmp_path / "imp").exists()
    assert main(["preview", "--dataset", str(out), "--out", str(tmp_path / "p.gif")]) == 2
    assert "name it .mp4" in capsys.readouterr().err and not (tmp_path / "p.gif").exists()
    (tmp_path / "file").write_text("")  # a file where a folder must be made: the file system's no, with the path
    assert main(["captions", "--data", str(out), "--out", str(tmp_path / "file" / "t.safetensors")]) == 2
    assert f"{tmp_path / 'file'}" in capsys.readouterr().err
