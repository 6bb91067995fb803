"""Model bundles and the shipped default: self-contained, verified on load, equal to their source."""
import json
import shutil

import numpy as np
import pytest

from worldstream import World
from worldstream.checkpoint import CheckpointError
from worldstream import weights
from worldstream.weights import export_bundle


def _frames(world, n=3):
    s = world.stream("a sunny meadow", seed=3)
    return np.stack([s.step("walk_e").frames for _ in range(n)])


def test_bundle_streams_like_its_run_and_stands_alone(tiny_teacher, tmp_path):
    res = export_bundle(tiny_teacher, tmp_path / "b", half=False)
    assert {"config.json", "model.safetensors", "video_ae/model.safetensors", "audio_ae/config.json",
            "MANIFEST.json"} <= set(res["files"]) | {"MANIFEST.json"}
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "b", moved)  # relative paths: the bundle works wherever it lies
    a, b = World.load(tiny_teacher), World.load(moved)
    assert np.array_equal(_frames(a), _frames(b))
    assert "noise_rng" not in json.loads((moved / "config.json").read_text())  # training state stays behind


def test_teacher_bundle_refuses_a_step_count(tiny_teacher, tmp_path):
    with pytest.raises(CheckpointError, match="no recommended sampler"):
        export_bundle(tiny_teacher, tmp_path / "s", steps=1)
    assert not (tmp_path / "s").exists()


def test_half_bundle_loads_and_is_close(tiny_teacher, tmp_path):
    res = export_bundle(tiny_teacher, tmp_path / "h")
    full = (tiny_teacher / "model.safetensors").stat().st_size
    assert (tmp_path / "h" / "model.safetensors").stat().st_size < 0.6 * full
    World.load(tmp_path / "h").stream("", seed=0).step()
    assert res["params"] > 0


def test_damaged_or_incomplete_bundle_names_the_file(tiny_teacher, tmp_path):
    export_bundle(tiny_teacher, tmp_path / "b")
    p = tmp_path / "b" / "video_ae" / "model.safetensors"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="video_ae/model.safetensors changed"):
        World.load(tmp_path / "b")
    p.unlink()
    with pytest.raises(CheckpointError, match="video_ae/model.safetensors is missing"):
        World.load(tmp_path / "b")


def test_no_checkpoint_means_the_default(tiny_teacher, tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "DEFAULT", tmp_path / "none")
    with pytest.raises(CheckpointError, match="no default model"):
        World.load()
    export_bundle(tiny_teacher, tmp_path / "d")
    monkeypatch.setattr(weights, "DEFAULT", tmp_path / "d")
    assert World.load().meta["path"] == str(tmp_path / "d")


def test_shipped_default_loads_when_present():
    if not (weights.DEFAULT / "config.json").exists():
        pytest.skip("no default model in this checkout")
    world = World.load()  # verifies every file against the manifest
    assert world.rollout_config().steps <= 4  # the default is a few-step student
    chunk = world.stream("a sunny meadow", seed=0).step("walk_e")
    assert chunk.frames.shape[-1] == 3 and np.isfinite(chunk.audio).all()
