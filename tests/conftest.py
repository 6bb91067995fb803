import os

import pytest

os.environ.setdefault("PYTHONHASHSEED", "0")


@pytest.fixture(scope="session")
def small_world():
    from worldstream.worlds.overworld import Overworld, OverworldConfig

    return Overworld(OverworldConfig(width=96, height=64))


@pytest.fixture(scope="session")
def latent_dataset(tmp_path_factory):
    """10 overworld episodes of 16 frames at 32x32 with tiny autoencoders and a latent cache."""
    from worldstream.data.record import RecordConfig, record
    from worldstream.tokenizers.encode import encode_dataset
    from worldstream.train.autoencoder import AETrainConfig, train_autoencoder
    from worldstream.worlds.overworld import OverworldConfig

    root = tmp_path_factory.mktemp("latent")
    ds = root / "ds"
    record(ds, RecordConfig(world=OverworldConfig(width=32, height=32), episodes=10, frames=16), progress=False)
    for kind in ("video", "audio"):
        train_autoencoder(AETrainConfig(kind=kind, preset="tiny", dataset=str(ds), steps=2, batch=2, clip_frames=4,
                                        eval_every=2, eval_clips=2), root / kind, progress=False)
    encode_dataset(ds, root / "video", root / "audio", progress=False)
    return ds


@pytest.fixture(scope="session")
def tiny_teacher(latent_dataset, tmp_path_factory):
    """A tiny teacher trained 2 steps with a bounded view (window 2, 1 sink, memory top-2)."""
    from worldstream.train.teacher import TeacherTrainConfig, train_teacher

    out = tmp_path_factory.mktemp("teacher") / "t"
    train_teacher(TeacherTrainConfig(dataset=str(latent_dataset), preset="tiny", steps=2, batch=4, chunks=4,
                                     eval_every=2, warmup=2, window=2, sinks=1, memory_topk=2), out, progress=False)
    return out
