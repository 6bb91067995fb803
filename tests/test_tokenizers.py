"""Tokenizers: causality, streaming equals the full pass, checkpoints, bad shapes, text, actions."""
import dataclasses
import warnings

import numpy as np
import pytest
import torch

from worldstream.checkpoint import CheckpointError
from worldstream.tokenizers.actions import ActionVocab
from worldstream.tokenizers.audio_ae import AudioAE, audio_ae_preset
from worldstream.tokenizers.video_ae import VideoAE, VideoAEConfig, video_ae_preset

TINY_T4 = VideoAEConfig(spatial=8, temporal=4, latent_channels=8, widths=(8, 16, 16))


def _video_model(cfg, seed=0):
    torch.manual_seed(seed)
    m = VideoAE(cfg).eval()
    with torch.no_grad():  # give the zero-initialised convs weight so every path matters
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("cfg", [video_ae_preset("tiny"), TINY_T4], ids=["t1", "t4"])
@torch.no_grad()
def test_video_ae_is_causal(cfg):
    m = _video_model(cfg)
    x = torch.rand(1, 12, 3, 32, 48)
    z = m.encode(x)
    y = m.decode(z)
    x2 = x.clone()
    x2[:, 8:] = torch.rand_like(x2[:, 8:])  # change the future from frame 8 on
    z2 = m.encode(x2)
    steps_before = 8 // cfg.temporal
    assert torch.equal(z[:, :steps_before], z2[:, :steps_before])
    assert not torch.allclose(z[:, steps_before:], z2[:, steps_before:])
    z3 = z.clone()
    z3[:, steps_before:] += 1.0
    y3 = m.decode(z3)
    assert torch.equal(y[:, :8], y3[:, :8])  # later latents never change earlier frames
    assert not torch.allclose(y[:, 8:], y3[:, 8:])


@pytest.mark.parametrize("cfg", [video_ae_preset("tiny"), TINY_T4], ids=["t1", "t4"])
@torch.no_grad()
def test_video_streaming_equals_full_pass(cfg):
    m = _video_model(cfg, seed=1)
    x = torch.rand(2, 16, 3, 32, 32)
    z_full = m.encode(x)
    y_full = m.decode(z_full)
    enc_state, dec_state = {}, {}
    tt = cfg.temporal
    z_chunks = [m.encode(x[:, a : a + tt], enc_state) for a in range(0, 16, tt)]  # one latent step at a time
    y_chunks = [m.decode(zc, dec_state) for zc in z_chunks]
    torch.testing.assert_close(torch.cat(z_chunks, 1), z_full, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.cat(y_chunks, 1), y_full, rtol=0, atol=1e-5)
    # uneven chunks too (2 latent steps then 1 then the rest)
    dec_state = {}
    parts = [z_full[:, :2], z_full[:, 2:3], z_full[:, 3:]]
    torch.testing.assert_close(torch.cat([m.decode(p, dec_state) for p in parts], 1), y_full, rtol=0, atol=1e-5)


def test_video_ae_rejects_wrong_shapes_clearly():
    m = VideoAE(video_ae_preset("tiny"))
    with pytest.raises(ValueError, match=r"not divisible by the spatial factor 8.*\(e.g. 96x64\)"):
        m.encode(torch.rand(1, 1, 3, 70, 100))
    with pytest.raises(ValueError, match=r"frames must be \(B, T, 3, H, W\)"):
        m.encode(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="latents must be"):
        m.decode(torch.rand(1, 1, 5, 8, 8))
    with pytest.raises(ValueError, match="multiple of the temporal factor 4"):
        VideoAE(TINY_T4).encode(torch.rand(1, 3, 3, 32, 32))
    with pytest.raises(ValueError, match="spatial=16 needs"):
        VideoAEConfig(spatial=16, widths=(8, 8, 8))


def test_any_aspect_ratio_and_compression_16():
    m = VideoAE(VideoAEConfig(spatial=16, latent_channels=8, widths=(8, 8, 16, 16))).eval()
    with torch.no_grad():
        z = m.encode(torch.rand(1, 2, 3, 144, 256))  # 16:9
        assert z.shape == (1, 2, 8, 9, 16)
        assert m.decode(z).shape == (1, 2, 3, 144, 256)


@pytest.mark.parametrize("upsample", ["transpose", "repeat"])
@torch.no_grad()
def test_audio_ae_causal_and_streaming(upsample):
    torch.manual_seed(0)
    m = AudioAE(dataclasses.replace(audio_ae_preset("tiny"), upsample=upsample)).eval()
    x = (torch.rand(2, 8000) * 2 - 1) * 0.5
    z = m.encode(x)
    assert z.shape == (2, 16, 8)  # 2 tokens per 1000-sample video frame
    y = m.decode(z)
    enc, dec = {}, {}
    zs = [m.encode(x[:, a : a + 1000], enc) for a in range(0, 8000, 1000)]
    ys = [m.decode(zc, dec) for zc in zs]
    torch.testing.assert_close(torch.cat(zs, 1), z, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.cat(ys, 1), y, rtol=0, atol=1e-5)
    x2 = x.clone()
    x2[:, 4000:] = 0
    assert torch.equal(m.encode(x2)[:, :8], z[:, :8])
    z2 = z.clone()
    z2[:, 8:] = 0
    assert torch.equal(m.decode(z2)[:, :4000], y[:, :4000])
    with pytest.raises(ValueError, match="not a multiple of the hop 500"):
        m.encode(torch.rand(1, 1234))


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from worldstream.data.record import RecordConfig, record
    from worldstream.worlds.overworld import OverworldConfig

    path = tmp_path_factory.mktemp("tok") / "ds"
    record(path, RecordConfig(world=OverworldConfig(width=32, height=32), episodes=10, frames=16), progress=False)
    return path


def _cfg(kind, dataset, steps):
    from worldstream.train.autoencoder import AETrainConfig

    return AETrainConfig(kind=kind, preset="tiny", dataset=str(dataset), steps=steps, batch=2,
                         clip_frames=4, eval_every=5, eval_clips=2)


@pytest.mark.parametrize("kind", ["video", "audio"])
def test_train_checkpoint_round_trip_and_exact_resume(kind, tiny_dataset, tmp_path):
    from worldstream.checkpoint import load_tensors
    from worldstream.tokenizers.store import load_autoencoder
    from worldstream.train.autoencoder import train_autoencoder

    torch.set_num_threads(1)  # bit-exact resume needs the same reduction order
    straight = tmp_path / "straight"
    train_autoencoder(_cfg(kind, tiny_dataset, 10), straight, progress=False)
    split = tmp_path / "split"
    train_autoencoder(_cfg(kind, tiny_dataset, 10), split, progress=False, max_seconds=0.0)  # stops after 1 step
    metrics = train_autoencoder(_cfg(kind, tiny_dataset, 10), split, progress=False)  # same command: resumes
    assert metrics["step"] == 10
    a, b = load_tensors(straight / "model.safetensors"), load_tensors(split / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=f"{k} differs after resume")
    model = load_autoencoder(straight)
    assert model.cfg.latent_channels == 8 and not model.training
    with pytest.raises(CheckpointError, match="other settings"):
        train_autoencoder(dataclasses.replace(_cfg(kind, tiny_dataset, 10), lr=1e-2), straight, progress=False)
    assert train_autoencoder(_cfg(kind, tiny_dataset, 12), straight, progress=False)["step"] == 12  # extend


def test_checkpoint_errors_are_clear(tmp_path, tiny_dataset):
    from worldstream.checkpoint import load_json, save_json
    from worldstream.tokenizers.store import load_autoencoder
    from worldstream.train.autoencoder import train_autoencoder

    with pytest.raises(CheckpointError, match="config.json: not found"):
        load_autoencoder(tmp_path / "nothing")
    ck = tmp_path / "ck"
    train_autoencoder(_cfg("video", tiny_dataset, 2), ck, progress=False)
    meta = load_json(ck / "config.json")
    meta["model"]["latent_channels"] = 4
    save_json(ck / "config.json", meta)
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_autoencoder(ck)
    (ck / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_autoencoder(ck)


def test_encode_caches_the_same_latents(tiny_dataset, tmp_path):
    from worldstream.checkpoint import load_tensors
    from worldstream.data.format import Dataset
    from worldstream.tokenizers.encode import encode_dataset
    from worldstream.tokenizers.store import load_autoencoder
    from worldstream.train.autoencoder import train_autoencoder

    v, a = tmp_path / "v", tmp_path / "a"
    train_autoencoder(_cfg("video", tiny_dataset, 2), v, progress=False)
    train_autoencoder(_cfg("audio", tiny_dataset, 2), a, progress=False)
    res = encode_dataset(tiny_dataset, v, a, name="t", progress=False)
    assert res["episodes"] == 10
    ep = Dataset(tiny_dataset).episodes[3]
    cached = load_tensors(tiny_dataset / "latents" / "t" / f"{ep.name}.safetensors")
    vae = load_autoencoder(v)
    with torch.no_grad():
        direct = vae.encode(torch.from_numpy(np.array(ep.frames())).permute(0, 3, 1, 2)[None].float() / 255)[0]
    assert cached["video"].shape == direct.shape == (16, 8, 4, 4)
    torch.testing.assert_close(cached["video"].float(), direct, rtol=1e-2, atol=1e-2)  # float16 storage
    assert cached["audio"].shape == (32, 8)
    assert encode_dataset(tiny_dataset, v, a, name="t", progress=False)["episodes"] == 0  # resumable


def test_text_encoder_hash_similarity_cache_truncation(tmp_path):
    import shutil

    from worldstream.tokenizers.text import TextEncoder, TextEncoderError, default_model_dir

    te = TextEncoder()
    # the value sentence-transformers publishes for all-MiniLM-L6-v2 on this pair
    assert abs(te.similarity("A man is eating food.", "A man is eating a piece of bread.") - 0.7553) < 1e-3
    assert te.similarity("it begins to snow", "snowfall") > te.similarity("it begins to snow", "night falls") + 0.3
    e = te.encode("a snowy evening")
    assert e.tokens.shape == (5, 384) and abs(float(e.pooled.norm()) - 1) < 1e-5
    assert te.encode("a snowy evening") is e  # LRU cache
    empty = te.encode("")
    assert empty.tokens.shape == (0, 384) and float(empty.pooled.abs().sum()) == 0
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        long = te.encode("snow " * 400)
    assert long.tokens.shape[0] == 128 and any("truncated" in str(x.message) for x in w)
    with pytest.raises(TypeError, match="must be a string"):
        te.encode(42)
    bad = tmp_path / "model"
    shutil.copytree(default_model_dir(), bad)
    data = bytearray((bad / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (bad / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(TextEncoderError, match="SHA-256"):
        TextEncoder(bad)


def test_a_text_table_gives_the_encoders_numbers_where_the_encoder_is_missing(tiny_dataset, tmp_path, monkeypatch):
    from worldstream.data.latents import PromptBank
    from worldstream.tokenizers.text import (TEXT_TABLE_ENV, TextEncoder, TextEncoderError, TextTable, dataset_captions,
                                             save_text_table)

    te = TextEncoder()
    captions = dataset_captions([tiny_dataset])
    assert captions and all(isinstance(c, str) and c for c in captions)
    res = save_text_table(captions + ["night falls", ""], tmp_path / "t.safetensors", encoder=te)
    assert res["prompts"] == len(set(captions) | {"night falls"})
    monkeypatch.setenv(TEXT_TABLE_ENV, str(tmp_path / "t.safetensors"))
    bank = PromptBank()  # trainers' default: the table, the encoder never loaded
    assert isinstance(bank.encoder, TextTable)
    for p in (captions[0], "night falls"):
        torch.testing.assert_close(bank.encoder.encode(p).tokens, te.encode(p).tokens, rtol=0, atol=0)
        torch.testing.assert_close(bank.encoder.encode(p).pooled, te.encode(p).pooled, rtol=0, atol=0)
    tokens, mask, pooled = bank.batch(["", "night falls"])
    assert not mask[0].any() and float(pooled[0].abs().sum()) == 0 and mask[1].sum() == te.encode("night falls").tokens.shape[0]
    with pytest.raises(TextEncoderError, match="not in the text table"):
        bank.encoder.encode("a purple elephant dances")
    monkeypatch.setenv(TEXT_TABLE_ENV + "_MISSING", "empty")  # opt-in: an unknown prompt trains as the empty one
    with pytest.warns(UserWarning, match="empty prompt"):
        assert TextTable(tmp_path / "t.safetensors").encode("a purple elephant dances").tokens.shape == (0, 384)
    (tmp_path / "bad.safetensors").write_bytes(b"not a table")
    for path, match in ((tmp_path / "bad.safetensors", "not a text table"), (tmp_path / "none", "no such file")):
        with pytest.raises(TextEncoderError, match=match):
            TextTable(path)


def test_action_vocab_from_manifest_and_keys():
    from worldstream.worlds.overworld import ACTIONS

    v = ActionVocab.from_manifest({"actions": {"names": list(ACTIONS), "axes": []}})
    name = lambda keys: v.names[v.from_keys(keys)]  # noqa: E731
    assert name([]) == "idle" and name(["w"]) == "walk_n" and name(["w", "d"]) == "walk_ne"
    assert name(["ArrowDown", "ArrowLeft", "Shift"]) == "run_sw" and name(["a", "d"]) == "idle"
    atari = ActionVocab(("noop", "fire", "right", "left", "rightfire", "leftfire"))
    assert [atari.names[atari.from_keys(k)] for k in ([], [" "], ["d"], ["d", " "])] == ["noop", "fire", "right", "rightfire"]
    assert v.index("run_e") == 11 and v.index(3) == 3
    with pytest.raises(ValueError, match="unknown action 'jump'"):
        v.index("jump")
    with pytest.raises(ValueError, match="no 'actions'"):
        ActionVocab.from_manifest({})


def test_tiny_video_ae_learns_in_seconds(tiny_dataset, tmp_path):
    """Training must actually reduce held-out error, not just run."""
    from worldstream.train.autoencoder import AETrainConfig, train_autoencoder

    cfg = AETrainConfig(kind="video", preset="tiny", dataset=str(tiny_dataset), steps=60, batch=4, clip_frames=2,
                        lr=3e-3, eval_every=60, eval_clips=4)
    before = train_autoencoder(dataclasses.replace(cfg, steps=1, eval_every=1), tmp_path / "a", progress=False)
    after = train_autoencoder(cfg, tmp_path / "b", progress=False)
    assert after["psnr"] > before["psnr"] + 3, (before, after)


def test_shift_latent_moves_a_linear_field_exactly():
    """Bilinear interpolation reproduces a linear field at any fractional offset, so the shift
    loss's target is the moved latent, not an approximation of it."""
    from worldstream.train.autoencoder import shift_latent

    i, j = torch.meshgrid(torch.arange(6.0), torch.arange(5.0), indexing="ij")
    z = (i + 2 * j)[None, None].repeat(2, 3, 1, 1)
    for fy, fx in ((0.125, 0.0), (0.5, 0.25), (0.875, 0.625)):
        torch.testing.assert_close(shift_latent(z, fy, fx), (i + fy + 2 * (j + fx))[:-1, :-1].expand(2, 3, 5, 4))


def test_shift_loss_makes_the_latent_follow_a_moved_frame(tmp_path):
    """The shift-consistency loss trains (init from another run, resumable config) and lowers the
    held-out latent shift error against the same run without it; too-small crops are refused."""
    from worldstream.data.record import RecordConfig, record
    from worldstream.train.autoencoder import AETrainConfig, train_autoencoder
    from worldstream.worlds.overworld import OverworldConfig

    data = tmp_path / "ds"
    record(data, RecordConfig(world=OverworldConfig(width=48, height=48), episodes=10, frames=12), progress=False)
    cfg = AETrainConfig(kind="video", preset="tiny", dataset=str(data), steps=40, batch=4, clip_frames=2, crop=32,
                        lr=3e-3, eval_every=40, eval_clips=4)
    base = train_autoencoder(cfg, tmp_path / "base", progress=False)
    plain = train_autoencoder(dataclasses.replace(cfg, init_from=str(tmp_path / "base")), tmp_path / "plain", progress=False)
    shifted = train_autoencoder(dataclasses.replace(cfg, init_from=str(tmp_path / "base"), shift_weight=1.0),
                                tmp_path / "shifted", progress=False)
    assert {"shift_1px", "shift_2px", "shift_4px"} <= set(base)
    assert shifted["shift_2px"] < 0.7 * plain["shift_2px"], (plain, shifted)
    assert shifted["psnr"] > base["psnr"] - 3, (base, shifted)  # still an autoencoder
    with pytest.raises(ValueError, match="at least 32 px"):
        train_autoencoder(dataclasses.replace(cfg, crop=16, shift_weight=1.0), tmp_path / "small", progress=False)
    with pytest.raises(ValueError, match="video autoencoder only"):
        AETrainConfig(kind="audio", preset="tiny", dataset=str(data), shift_weight=1.0)


def test_the_patch_critic_tells_real_texture_from_its_blur_and_balances_by_gradients():
    """The decoder fine-tune's critic learns in a few dozen steps to score sharp texture above the same
    texture blurred; VQGAN's balance is the ratio of the two losses' gradient norms at the given weight;
    a wrong shape is a clear error."""
    import torch.nn.functional as F

    from worldstream.tokenizers.patch_gan import PatchDiscriminator, adaptive_weight, discriminator_hinge

    torch.manual_seed(0)
    real = (torch.rand(8, 3, 32, 32) > 0.5).float()
    blurred = F.avg_pool2d(real, 3, 1, 1, count_include_pad=False)
    disc = PatchDiscriminator()
    opt = torch.optim.AdamW(disc.parameters(), lr=1e-3, betas=(0.5, 0.9))
    for _ in range(40):
        loss, parts = discriminator_hinge(disc, real, blurred)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert disc(real).mean() > disc(blurred).mean() + 1.0, parts
    w = torch.randn(5, requires_grad=True)
    gen = (w ** 2).sum()
    assert adaptive_weight(3 * gen, gen, w).item() == pytest.approx(3.0, rel=1e-3)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        disc(torch.rand(2, 32, 32))


def test_softened_latents_lie_between_the_latent_and_its_local_mean_and_need_a_decoder_only_run(tiny_dataset):
    """``--latent-blur``: a share of clips moved toward their 3x3 latent mean, each by its own amount;
    a flat latent has nothing to soften; only a decoder-only run may train on them."""
    import torch.nn.functional as F

    from worldstream.train.autoencoder import soften_latents

    torch.manual_seed(0)
    z = torch.randn(64, 2, 4, 6, 6)
    assert torch.equal(soften_latents(z, 0.0), z)
    smooth = F.avg_pool2d(z.flatten(0, 1), 3, 1, 1, count_include_pad=False).view_as(z)
    out = soften_latents(z, 1.0)
    a = ((out - z) * (smooth - z)).sum((1, 2, 3, 4)) / ((smooth - z) ** 2).sum((1, 2, 3, 4))  # each clip's amount
    assert torch.allclose(out, z + a.view(-1, 1, 1, 1, 1) * (smooth - z), atol=1e-5)
    assert 0 <= a.min() < 0.2 and 0.8 < a.max() <= 1  # drawn per clip across [0, 1]
    half = soften_latents(z, 0.5)
    untouched = (half == z).flatten(1).all(1).float().mean()
    assert 0.3 < untouched < 0.7
    flat = torch.ones(4, 1, 4, 6, 6)
    assert torch.allclose(soften_latents(flat, 1.0), flat)
    with pytest.raises(ValueError, match="--decoder-only"):
        dataclasses.replace(_cfg("video", tiny_dataset, 2), latent_blur=0.5)


def test_own_latents_paired_only_coarsely_leave_their_detail_to_the_critic(tiny_dataset):
    """``--own-lowpass k``: a world model's latents are paired with the recorded frames only as k x k means,
    so a recorded frame that differs from the decoded one only in detail within each block costs nothing
    (the detail is the critic's to judge), while the full-resolution pairing charges for it; the coarse
    pairing needs the critic."""
    from worldstream.tokenizers.video_ae import VideoAE, video_ae_preset
    from worldstream.train.autoencoder import AETrainConfig, _loss

    torch.manual_seed(0)
    model = VideoAE(video_ae_preset("tiny"))
    cfg = AETrainConfig(kind="video", preset="tiny", dataset=str(tiny_dataset), decoder_only=True, init_from="ae",
                        own_from="model", own_share=0.5, own_lowpass=4, adv_weight=0.5, bf16=False)
    own = torch.randn(2, 3, 8, 4, 4)
    with torch.no_grad():
        y = model.decode(own)
    checker = ((torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2).float() * 0.2 - 0.1  # +-0.1, mean 0 per 4 x 4
    x = y + checker
    coarse, parts, _ = _loss(cfg, model, x, own=own)
    full, _, _ = _loss(dataclasses.replace(cfg, own_lowpass=1), model, x, own=own)
    assert parts["l1_coarse"] < 1e-5 and full.item() > 0.09
    with pytest.raises(ValueError, match="--adv-weight"):
        dataclasses.replace(cfg, adv_weight=0.0)
