"""A whole-pixel move model (``OmniConfig.move_reach``) and the ground its streams keep (``engine.ground``):
the move is exact, the strip it uncovers is copied ground, walking back shows exactly the ground shown
before, memory stays flat however far a stream walks, and a frame's move is settled once."""
import pytest
import torch
from omni_helpers import omni_inputs, tiny_omni

from worldstream.engine.ground import Ground, draw_uncovered, uncovered
from worldstream.engine.rollout import Conditioning, RolloutConfig, rollout
from worldstream.model.omni import best_move, move_frames, move_grid, previous_frames

X0 = RolloutConfig(sampler="x0", steps=1, text_scale=1.0, action_scale=1.0)


def _world(size=160, seed=0):
    """A static world of random blobs in 3 colours' channels: every crop different, every pixel value unique."""
    g = torch.Generator().manual_seed(seed)
    w = torch.nn.functional.avg_pool2d(torch.rand(1, 3, size, size, generator=g), 5, 1, 2)[0]
    return w + 1e-4 * torch.rand(3, size, size, generator=g)


def _crop(world, y, x, n=32):
    return world[:, y : y + n, x : x + n]


@torch.no_grad()
def _mover(move, **kw):
    """A tiny move model whose change head is zero and whose move head always names ``move``."""
    m = tiny_omni(4, prev_frame=True, prev_std=0.2, move_reach=2, **kw)
    m.video_out.weight.zero_()
    m.video_out.bias.zero_()
    m.move_head.weight.zero_()
    m.move_head.bias.zero_()
    m.move_head.bias[(move_grid(2) == torch.tensor(move, dtype=torch.float32)).all(1).nonzero()[0, 0]] = 1.0
    return m


def test_the_best_move_is_the_whole_pixel_scroll_between_two_crops():
    world = _world()
    a, b = _crop(world, 40, 40), _crop(world, 41, 38)  # the view went 1 down, 2 left: content moved (-1, +2)
    i = best_move(a[None], b[None], 2)
    assert move_grid(2)[i].tolist() == [[-1.0, 2.0]]


@torch.no_grad()
def test_a_move_stream_equals_the_full_pass_and_moves_its_frame_by_the_named_move():
    """With the change head at zero, each streamed frame is the last one moved by the head's move (one px
    right here, the left column repeated); the same frames from one full pass; a forced move overrides."""
    m = _mover((0, 1))
    x = omni_inputs(B=1, K=4)
    cond = Conditioning(x["text"][:1], x["text_mask"][:1], x["text_pooled"][:1], x["actions"][:1])
    img = torch.randn(1, 1, 8, 4, 6)
    v, a = rollout(m, X0, cond, 4, (8, 4, 6), seed=3, first_video=img)
    one = torch.tensor([[[0.0, 1.0]]])
    for c in range(1, 4):
        torch.testing.assert_close(v[:, c : c + 1], move_frames(v[:, c - 1 : c], one), rtol=0, atol=1e-5)
    t = torch.zeros(1, 4)
    t[:, -1] = 1.0
    full = dict(video=torch.cat([v[:, :3], torch.randn(1, 1, 8, 4, 6)], 1), t_video=t, actions=x["actions"][:1],
                audio=a, t_audio=t, text=x["text"][:1], text_mask=x["text_mask"][:1], text_pooled=x["text_pooled"][:1],
                prev=previous_frames(v, 1))
    pv, _, logits = m(**full, return_moves=True)
    torch.testing.assert_close(full["video"][:, -1] - pv[:, -1], v[:, 3], rtol=0, atol=1e-5)
    assert logits.shape == (1, 4, 25)
    forced = torch.zeros(1, 4, 2)
    forced[..., 0] = -1.0  # one up instead
    pv, _ = m(**full, move=forced)
    torch.testing.assert_close(full["video"][:, -1] - pv[:, -1], move_frames(v[:, 2:3], forced[:, :1])[:, 0],
                               rtol=0, atol=1e-5)


def test_bad_move_settings_are_clear_errors():
    with pytest.raises(ValueError, match="needs prev_frame"):
        tiny_omni(0, move_reach=2)
    m = _mover((0, 1))
    x = omni_inputs(B=1, K=2)
    with pytest.raises(ValueError, match="one whole-pixel move per frame"):
        m(**{k: v[:1] for k, v in x.items()}, prev=x["video"][:1], move=torch.zeros(1, 3, 2))
    plain = tiny_omni(0, prev_frame=True, prev_std=0.2)
    cond = Conditioning(None, None, None, x["actions"][:1])
    with pytest.raises(ValueError, match="move head"):
        from worldstream.engine.rollout import generate_chunk, make_branches

        generate_chunk(plain, make_branches(plain, X0), X0, cond, 0, (8, 4, 6), ground=Ground(1))


def test_the_drawn_strip_is_ground_copied_from_the_last_frame():
    world = _world()
    prev = _crop(world, 60, 60)
    for move in ((0, -2), (0, 3), (-2, 0), (1, -1)):
        m = torch.tensor(move, dtype=torch.float32)
        moved = move_frames(prev[None, None], m[None, None])[0, 0]
        out = draw_uncovered(moved, prev, m, torch.Generator().manual_seed(0))
        strip = uncovered(m[None], 32, 32)[0]
        torch.testing.assert_close(out[:, ~strip], moved[:, ~strip])  # the rest is the exact move
        colours = set(map(tuple, prev.flatten(1).T.tolist()))
        drawn = out[:, strip].T.tolist()
        assert all(tuple(c) in colours for c in drawn)  # every drawn pixel is one of the last frame's
        border = moved[:, strip]
        assert (out[:, strip] - border).abs().mean() > 1e-3  # and not the repeated border


def _walk(ground, world, path, y=60, x=60, first=1):
    """Feed ``ground`` the true frames of a walk along ``path`` (view moves (dy, dx) a frame); returns the
    filled previous frames and the true frames."""
    filled, truth = [], []
    for f, (vy, vx) in enumerate(path, start=first):
        prev = _crop(world, y, x)
        y, x = y + vy, x + vx
        move = torch.tensor([[-vy, -vx]], dtype=torch.float32)  # the content moves against the view
        moved = move_frames(prev[None, None], move[:, None])[:, 0]
        filled.append(ground.fill(f, prev[None], move, moved)[0])
        truth.append(_crop(world, y, x))
    return filled, truth


def test_walking_back_shows_exactly_the_ground_shown_before():
    world = _world()
    out_and_back = [(0, 2)] * 12 + [(1, 0)] * 5 + [(-1, 0)] * 5 + [(0, -2)] * 12
    filled, truth = _walk(Ground(1, seed=0), world, out_and_back)
    for f in range(17, len(out_and_back)):  # every frame on the way back: the strip is recalled, exactly
        torch.testing.assert_close(filled[f], truth[f], rtol=0, atol=0)
    new = uncovered(torch.tensor([[0.0, -2.0]]), 32, 32)[0]
    assert (filled[5][:, new] - truth[5][:, new]).abs().mean() > 1e-3  # new ground is drawn, not known
    drawn, _ = _walk(Ground(1, seed=0, remember=False), world, out_and_back)
    assert any((drawn[f] - truth[f]).abs().max() > 1e-3 for f in range(17, len(out_and_back)))


def test_a_long_walk_keeps_memory_flat_and_still_remembers_where_it_just_was():
    world = _world(size=700, seed=1)
    g = Ground(1, seed=0, size=96)  # three frames across: re-centred many times on a 600-px walk
    _walk(g, world, [(0, 3)] * 200 + [(0, -3)] * 10, y=300, x=10)
    assert g.pix.shape == (1, 3, 96, 96)
    filled, truth = _walk(g, world, [(0, -3)] * 5, y=300, x=10 + 3 * 190, first=211)
    for f, t in zip(filled, truth):
        torch.testing.assert_close(f, t, rtol=0, atol=0)


def test_a_frame_is_settled_once_and_forgotten_ground_is_drawn_again():
    world = _world()
    prev = _crop(world, 60, 60)[None]
    g = Ground(1, seed=0)
    right, left = torch.tensor([[0.0, -1.0]]), torch.tensor([[0.0, 1.0]])
    first = g.fill(1, prev, right, move_frames(prev[:, None], right[:, None])[:, 0])
    again = g.fill(1, prev.repeat(2, 1, 1, 1), left.repeat(2, 1), torch.zeros(2, 3, 32, 32))  # later step, 2 branches
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[0])
    g.forget()
    assert not g.seen.any()


def test_next_levels_train_clean_history_then_noise():
    from worldstream.train.teacher import TeacherTrainConfig, draw_tasks

    torch.manual_seed(0)
    d = draw_tasks(TeacherTrainConfig(dataset="unused", levels="next", history_noise=0.1), 2000, 6)
    tv, ta, task = d["tv"], d["ta"], d["task"]
    made = tv == 1
    assert made.any(1)[task != 2].all() and not made[:, 0].any()  # each clip makes frames after clean history
    assert (made.int().diff(dim=1) >= 0).all()  # ... from one chunk on to the end
    assert (tv[~made] <= 0.1).all() and (ta[task == 1] <= 0.1).all() and (tv[task == 2] <= 0.1).all()


def test_a_pixel_world_with_a_move_head_trains_resumes_and_streams_with_its_ground(latent_dataset, tmp_path):
    """The whole path of a pixel world: the codec's statistics, a pixel cache with sound, a move teacher
    trained on next-frame levels (resumed exactly), then a stream that walks with its ground."""
    from worldstream.checkpoint import load_tensors
    from worldstream.engine.stream import World
    from worldstream.tokenizers.encode import encode_dataset
    from worldstream.tokenizers.pixels import fit_pixel_codec
    from worldstream.train.teacher import TeacherTrainConfig, train_teacher

    import shutil

    ds = tmp_path / "ds"  # a copy: the shared dataset keeps only its own latent cache
    shutil.copytree(latent_dataset, ds)
    stats = fit_pixel_codec(ds, tmp_path / "pixels")
    assert all(0 < s < 1 for s in stats["std"])
    encode_dataset(ds, tmp_path / "pixels", latent_dataset.parent / "audio", name="pixels", progress=False)
    cfg = TeacherTrainConfig(dataset=str(ds), latents="pixels", preset="tiny_pixel", steps=4, batch=4,
                             chunks=4, eval_every=4, warmup=2, window=2, prev_frame=True, move_reach=2, levels="next",
                             bf16=False, samples=False)
    torch.set_num_threads(1)
    train_teacher(cfg, tmp_path / "a", progress=False)
    train_teacher(cfg, tmp_path / "b", progress=False, max_seconds=0.0)
    train_teacher(cfg, tmp_path / "b", progress=False)
    a, b = load_tensors(tmp_path / "a" / "model.safetensors"), load_tensors(tmp_path / "b" / "model.safetensors")
    assert "move_head.weight" in a
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    world = World.load(tmp_path / "a")
    assert world.model.cfg.move_reach == 2 and world.latent_shape == (3, 32, 32)
    s = world.stream("", seed=0)
    for i in range(6):
        chunk = s.step("walk_e")
    assert chunk.rgb.shape[-3:] == (32, 32, 3) and s.ground is not None and s.ground.made == 5
    s.prompt("it begins to snow")
    s.step("walk_w")  # a new look: the remembered ground is dropped, not brought back
    assert s.ground.made == 6


@torch.no_grad()
@pytest.mark.parametrize("stacked", [False, True])
def test_under_guidance_the_fully_conditioned_branch_settles_the_frame(stacked):
    """With guidance branches (nothing / prompt / prompt and keys), the branch that sees the prompt and the keys
    makes the first pass of a frame, so the frame takes the move that branch names; the others predict around it."""
    from worldstream.engine.rollout import generate_chunk, make_branches, prefill

    m = tiny_omni(4, prev_frame=True, prev_std=0.2, move_reach=2)
    x = omni_inputs(B=1, K=3)
    cfg = RolloutConfig(sampler="x0", steps=1, text_scale=2.0, action_scale=3.0)
    cond = Conditioning(x["text"][:1], x["text_mask"][:1], x["text_pooled"][:1], torch.zeros(1, 3, dtype=torch.long))
    g = Ground(1, seed=0)
    passes = []
    forward = m.forward

    def record(*args, **kw):
        if kw.get("ground") is not None:
            passes.append((bool((kw["actions"][-1:] >= 0).all()), kw.get("text") is not None, g.made))
        return forward(*args, **kw)

    m.forward = record
    branches = make_branches(m, cfg, stacked=stacked)
    prefill(m, branches, cond, torch.randn(1, 1, 8, 4, 6), x["audio"][:1, :2])
    generate_chunk(m, branches, cfg, cond, 1, (8, 4, 6), torch.Generator().manual_seed(0), ground=g)
    assert passes[0] == (True, True, -1) and all(made == 1 for _, _, made in passes[1:])
    assert len(passes) == len(branches) and g.made == 1


@torch.no_grad()
def test_a_held_centre_stays_put_while_the_ground_around_it_moves():
    """The camera follows the player, so with ``hold_centre`` the centre square of each streamed frame is the
    last frame's centre, not moved with the rest; the best move ignores a sprite that stands still."""
    m = _mover((0, 1), hold_centre=2)
    x = omni_inputs(B=1, K=4)
    cond = Conditioning(None, None, None, x["actions"][:1])
    img = torch.randn(1, 1, 8, 4, 6)
    v, _ = rollout(m, X0, cond, 4, (8, 4, 6), seed=3, first_video=img)
    one = torch.tensor([[[0.0, 1.0]]])
    for c in range(1, 4):
        want = move_frames(v[:, c - 1 : c], one).clone()
        # rows (4 - 2) // 2 .. and columns (6 - 2) // 2 .., and the column the move carried the square to
        want[..., 1:3, 2:5] = v[:, c - 1 : c, :, 1:3, 2:5]
        torch.testing.assert_close(v[:, c : c + 1], want, rtol=0, atol=1e-5)
    torch.testing.assert_close(v[0, 3, :, 1:3, 2:4], img[0, 0, :, 1:3, 2:4], rtol=0, atol=1e-5)
    # a 12 x 12 sprite at the centre of two 32 x 32 crops that scrolled (-1, +2): only with the hold is it not evidence
    world = _world()
    a, b = _crop(world, 40, 40).clone(), _crop(world, 41, 38).clone()
    a[:, 10:22, 10:22] = b[:, 10:22, 10:22] = 1.0 + torch.arange(144.0).view(12, 12) / 144
    assert move_grid(2)[best_move(a[None], b[None], 2, hold=12)].tolist() == [[-1.0, 2.0]]
    assert move_grid(2)[best_move(a[None], b[None], 2)].tolist() != [[-1.0, 2.0]]


@torch.no_grad()
def test_the_move_head_reads_the_tokens_around_the_player_and_fine_tunes_from_where_it_stood(tmp_path):
    """``move_near`` starts at zero (a checkpoint without it names the same moves) and reads only the centre
    tokens: changing a token elsewhere after the trunk leaves its part of the logits as it was."""
    import dataclasses

    from worldstream.checkpoint import save_tensors
    from worldstream.model.omni import Omni, centre_tokens
    from worldstream.train.state import init_weights

    old = tiny_omni(0, prev_frame=True, prev_std=0.2, move_reach=2)
    save_tensors(tmp_path / "model.safetensors", old.state_dict())
    new = Omni(dataclasses.replace(old.cfg, move_near=2)).eval()  # (not woken up as tiny_omni does)
    init_weights(new, tmp_path, "teacher")
    assert not new.move_near.weight.any()
    x = {k: v[:1] for k, v in omni_inputs(B=1, K=2).items()}
    prev = previous_frames(x["video"], 1)
    _, _, a = old(**x, prev=prev, return_moves=True)
    _, _, b = new(**x, prev=prev, return_moves=True)
    torch.testing.assert_close(a, b)
    tokens = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(1, 2, 3 * 4, 5)  # a 3 x 4 grid of 5-d tokens
    got = centre_tokens(tokens, 3, 4, 2).view(1, 2, 4, 5)
    want = tokens.view(1, 2, 3, 4, 5)[:, :, 0:2, 1:3].reshape(1, 2, 4, 5)
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="more tokens"):
        centre_tokens(tokens, 3, 4, 4)
    with pytest.raises(ValueError, match="belong to a whole-pixel move"):
        tiny_omni(0, prev_frame=True, prev_std=0.2, hold_centre=8)
