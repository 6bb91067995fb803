"""The Omni transformer: block-causal, cached forward equals the full pass, per-chunk noise."""
import pytest
import torch
from omni_helpers import omni_inputs, tiny_omni

from worldstream.model.cache import KVCache
from worldstream.model.omni import Omni, omni_preset


_model = tiny_omni
_inputs = omni_inputs


@torch.no_grad()
def test_a_later_chunk_never_changes_an_earlier_output():
    m, x = _model(), _inputs()
    v, a = m(**x)
    y = dict(x)
    y["video"] = x["video"].clone()
    y["video"][:, 2:] += 1.0
    y["actions"] = x["actions"].clone()
    y["actions"][:, 3] = 5
    y["audio"] = x["audio"].clone()
    y["audio"][:, 4:] -= 1.0
    y["t_video"] = x["t_video"].clone()
    y["t_video"][:, 2:] = 0.9
    v2, a2 = m(**y)
    torch.testing.assert_close(v[:, :2], v2[:, :2], rtol=0, atol=1e-5)
    torch.testing.assert_close(a[:, :4], a2[:, :4], rtol=0, atol=1e-5)
    assert not torch.allclose(v[:, 2:], v2[:, 2:])


@torch.no_grad()
def test_padded_text_is_ignored():
    m, x = _model(), _inputs()
    v, _ = m(**x)
    y = dict(x)
    y["text"] = x["text"].clone()
    y["text"][0, 3:] = 100.0  # padding of sample 0
    v2, _ = m(**y)
    torch.testing.assert_close(v, v2, rtol=0, atol=1e-5)


@torch.no_grad()
def test_cached_chunk_by_chunk_equals_the_full_pass():
    m, x = _model(1), _inputs(B=2, K=4)
    v_full, a_full = m(**x)
    cache = m.new_cache()
    outs_v, outs_a = [], []
    for c in range(4):
        kw = dict(video=x["video"][:, c : c + 1], t_video=x["t_video"][:, c : c + 1], actions=x["actions"][:, c : c + 1],
                  audio=x["audio"][:, 2 * c : 2 * c + 2], t_audio=x["t_audio"][:, c : c + 1],
                  text=x["text"], text_mask=x["text_mask"], text_pooled=x["text_pooled"], cache=cache, start_frame=c)
        v, a = m(**kw)
        cache.commit()
        outs_v.append(v)
        outs_a.append(a)
    torch.testing.assert_close(torch.cat(outs_v, 1), v_full, rtol=0, atol=1e-4)
    torch.testing.assert_close(torch.cat(outs_a, 1), a_full, rtol=0, atol=1e-4)
    assert cache.text_valid.shape[1] == 5 and len(cache.chunk_of) == 4 * (1 + 24 + 2)  # prompt kept with chunk 0


@torch.no_grad()
def test_each_chunk_and_modality_has_its_own_noise_level():
    m, x = _model(2), _inputs(K=3)
    v, a = m(**x)
    y = dict(x)
    y["t_audio"] = x["t_audio"].clone()
    y["t_audio"][:, 2] = 0.0  # only chunk 2's audio noise level changes
    v2, a2 = m(**y)
    torch.testing.assert_close(a[:, :4], a2[:, :4], rtol=0, atol=1e-5)
    assert not torch.allclose(a[:, 4:], a2[:, 4:])
    torch.testing.assert_close(v[:, :2], v2[:, :2], rtol=0, atol=1e-5)


def test_any_resolution_and_clear_shape_errors():
    m = _model()
    x = _inputs(B=1, K=2, h=3, w=8)
    x["text_mask"] = x["text_mask"][:1]
    v, a = m(**x)
    assert v.shape == (1, 2, 8, 3, 8) and a.shape == (1, 4, 8)
    with pytest.raises(ValueError, match="do not fit"):
        m(**{**x, "video": torch.randn(1, 2, 5, 3, 8)})


def test_presets_size():
    assert 6e6 < sum(p.numel() for p in Omni(omni_preset("default")).parameters()) < 14e6
    big = omni_preset("1b")
    n = 12 * big.width**2 * big.depth + 6 * big.width**2 * big.depth  # qkv/proj/mlp + adaLN, roughly
    assert 0.8e9 < n < 1.4e9


@torch.no_grad()
def test_a_fully_dropped_prompt_is_finite_and_equals_no_text():
    m, x = _model(3), _inputs(B=2, K=2)
    x["text_mask"] = torch.tensor([[0, 0, 0, 0, 0], [1, 1, 1, 1, 1]]).bool()
    x["text_pooled"] = x["text_pooled"] * torch.tensor([[0.0], [1.0]])
    v, a = m(**x)
    assert torch.isfinite(v).all() and torch.isfinite(a).all()
    alone = {k: (val[:1] if torch.is_tensor(val) else val) for k, val in x.items()}
    alone.update(text=None, text_mask=None)
    v0, _ = m(**alone)
    torch.testing.assert_close(v[:1], v0, rtol=0, atol=1e-5)  # masked-out text == no text at all


@torch.no_grad()
def test_rollout_chunk_by_chunk_is_deterministic_and_causal():
    from worldstream.engine.rollout import Conditioning, RolloutConfig, rollout

    m = _model(4)
    x = _inputs(B=1, K=3)
    cond = Conditioning(x["text"][:1], x["text_mask"][:1], x["text_pooled"][:1], x["actions"][:1])
    cfg = RolloutConfig(sampler="euler", steps=3, text_scale=2.0, action_scale=1.5)
    v1, a1 = rollout(m, cfg, cond, 3, (8, 4, 6), seed=7)
    v2, a2 = rollout(m, cfg, cond, 3, (8, 4, 6), seed=7)
    assert v1.shape == (1, 3, 8, 4, 6) and a1.shape == (1, 6, 8)
    assert torch.equal(v1, v2) and torch.equal(a1, a2)  # same seed, same stream
    cond2 = Conditioning(cond.text, cond.text_mask, cond.text_pooled, cond.actions.clone())
    cond2.actions[:, 2] = (cond.actions[:, 2] + 1) % 17
    v3, _ = rollout(m, cfg, cond2, 3, (8, 4, 6), seed=7)
    assert torch.equal(v1[:, :2], v3[:, :2]) and not torch.equal(v1[:, 2], v3[:, 2])  # an action acts on its chunk
    img = torch.randn(1, 1, 8, 4, 6)
    v4, _ = rollout(m, cfg, cond, 2, (8, 4, 6), seed=7, first_video=img)
    assert torch.equal(v4[:, 0], img[:, 0])  # image-to-world: the given frame starts the stream


@torch.no_grad()
@pytest.mark.parametrize("prev_shift", [False, True])
def test_a_prev_frame_stream_equals_the_teacher_forced_full_pass(prev_shift):
    """A model that predicts around the previous frame (moved by its own guess of the view's shift,
    or not): each streamed chunk (deferred commits, the last frame kept by the rollout) is exactly
    what one full pass over the finished frames makes."""
    from worldstream.engine.rollout import Conditioning, RolloutConfig, rollout
    from worldstream.model.omni import previous_frames

    m = _model(5, prev_frame=True, prev_std=0.2, prev_shift=prev_shift)
    x = _inputs(B=1, K=4)
    cond = Conditioning(x["text"][:1], x["text_mask"][:1], x["text_pooled"][:1], x["actions"][:1])
    cfg = RolloutConfig(sampler="x0", steps=1, text_scale=1.0, action_scale=1.0)
    img = torch.randn(1, 1, 8, 4, 6)
    v, a = rollout(m, cfg, cond, 4, (8, 4, 6), seed=3, first_video=img)
    g = torch.Generator().manual_seed(3)
    noise = [torch.randn(1, 8 * 4 * 6 + 2 * 8, generator=g) for _ in range(4)]  # the rollout's draws, in order
    for c in range(1, 4):
        nv = noise[c][:, : 8 * 4 * 6].view(1, 1, 8, 4, 6)
        na = noise[c][:, 8 * 4 * 6 :].view(1, 2, 8)
        video, audio = torch.cat([v[:, :c], nv], 1), torch.cat([a[:, : 2 * c], na], 1)
        t = torch.zeros(1, c + 1)
        t[:, -1] = 1.0
        pv, pa = m(video=video, t_video=t, actions=x["actions"][:1, : c + 1], audio=audio, t_audio=t,
                   text=x["text"][:1], text_mask=x["text_mask"][:1], text_pooled=x["text_pooled"][:1],
                   prev=previous_frames(video, 1))
        torch.testing.assert_close(v[:, c], nv[:, 0] - pv[:, -1], rtol=0, atol=1e-4)
    assert torch.equal(previous_frames(v, 1)[:, 1:], v[:, :-1]) and not previous_frames(v, 1)[:, 0].any()
    # the previous frame really enters the noisy chunk's prediction; a clean chunk does not move
    pv0, _ = m(video=video, t_video=t, actions=x["actions"][:1, :4], audio=audio, t_audio=t, prev=None)
    assert not torch.allclose(pv0[:, -1], pv[:, -1]) and not pv[:, :-1].abs().max() > 1e-4


@torch.no_grad()
def test_a_prev_frame_model_with_a_zero_output_copies_the_last_frame_at_any_length():
    """Predicting around the previous frame: the network's zero output is "nothing changed", so a
    one-step stream of a model whose video head is zero repeats its first frame exactly, however
    long and whatever the noise (the plain velocity would have to reproduce its input noise)."""
    from worldstream.engine.rollout import Conditioning, RolloutConfig, rollout

    m = _model(6, prev_frame=True, prev_std=0.15)
    m.video_out.weight.zero_()
    m.video_out.bias.zero_()
    x = _inputs(B=1, K=12)
    cond = Conditioning(x["text"][:1], x["text_mask"][:1], x["text_pooled"][:1], x["actions"][:1])
    img = torch.randn(1, 1, 8, 4, 6)
    v, _ = rollout(m, RolloutConfig(sampler="x0", steps=1, text_scale=1.0, action_scale=1.0), cond, 12, (8, 4, 6),
                   seed=1, first_video=img)
    assert (v - img).abs().max() < 1e-5


def test_moving_frames_is_exact_in_whole_pixels_bilinear_between_with_a_repeated_border_and_a_gradient():
    from worldstream.model.omni import move_frames

    z = torch.randn(2, 3, 4, 5, 6)
    one = torch.zeros(2, 3, 2)
    one[..., 1] = 1.0  # a whole latent pixel right: out[j] = z[j - 1], the first column repeated
    m = move_frames(z, one)
    torch.testing.assert_close(m[..., 1:], z[..., :-1])
    torch.testing.assert_close(m[..., 0], z[..., 0])
    quarter = torch.zeros(2, 3, 2)
    quarter[..., 0] = -0.25  # a quarter up: each row a quarter of the way to the one below
    torch.testing.assert_close(move_frames(z, quarter)[..., :-1, :], 0.75 * z[..., :-1, :] + 0.25 * z[..., 1:, :])
    assert torch.equal(move_frames(z, torch.zeros(2, 3, 2)), z)
    s = torch.full((2, 3, 2), 0.3, requires_grad=True)
    move_frames(z, s).square().sum().backward()
    assert s.grad.abs().min() > 0  # a loss on the moved frame teaches the shift
    far = torch.zeros(2, 3, 2)
    far[0, :, 0], far[1, :, 1] = 2.0, -3.25  # row 0: 2 down; row 1: 3 px left, then a quarter more
    m = move_frames(z, far)
    torch.testing.assert_close(m[0, :, :, 2:], z[0, :, :, :-2])
    torch.testing.assert_close(m[0, :, :, :2], z[0, :, :, :1].expand(-1, -1, 2, -1))
    three_left = torch.cat([z[1, ..., 3:], z[1, ..., -1:].expand(-1, -1, -1, 3)], -1)
    quarter_left = torch.zeros(1, 3, 2)
    quarter_left[..., 1] = -0.25
    torch.testing.assert_close(m[1], move_frames(three_left[None], quarter_left)[0])


@torch.no_grad()
def test_a_prev_shift_model_with_a_zero_change_moves_its_last_frame_by_its_shift():
    """Predicting around the previous frame moved by the model's shift: with the change head at zero
    and the shift head saying "a quarter pixel right", a one-step stream scrolls its first frame a
    quarter pixel a frame, frame after frame; with the shift head at zero (a fine-tune's start) it
    copies as a plain prev-frame model does."""
    import math

    from worldstream.engine.rollout import Conditioning, RolloutConfig, rollout
    from worldstream.model.omni import PREV_SHIFT_MAX, move_frames

    m = _model(6, prev_frame=True, prev_std=0.15, prev_shift=True)
    m.video_out.weight.zero_()
    m.video_out.bias.zero_()
    m.prev_shift_out.weight.zero_()
    m.prev_shift_out.bias.copy_(torch.tensor([0.0, math.atanh(0.25 / PREV_SHIFT_MAX)]))
    x = _inputs(B=1, K=6)
    cond = Conditioning(x["text"][:1], x["text_mask"][:1], x["text_pooled"][:1], x["actions"][:1])
    cfg = RolloutConfig(sampler="x0", steps=1, text_scale=1.0, action_scale=1.0)
    img = torch.randn(1, 1, 8, 4, 6)
    v, _ = rollout(m, cfg, cond, 6, (8, 4, 6), seed=1, first_video=img)
    quarter = torch.tensor([[[0.0, 0.25]]])
    for c in range(1, 6):
        torch.testing.assert_close(v[:, c : c + 1], move_frames(v[:, c - 1 : c], quarter), rtol=0, atol=1e-5)
    assert (v[:, -1] - img[:, 0]).abs().max() > 0.1  # it really scrolled
    m.prev_shift_out.bias.zero_()
    v, _ = rollout(m, cfg, cond, 6, (8, 4, 6), seed=1, first_video=img)
    assert (v - img).abs().max() < 1e-5
