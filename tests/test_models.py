"""Networks E, G, D: shapes, conditioning through psi, projection scores, spectral norm,
mixed precision, and that E+G can actually fit data."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from talkinghead.config import get_preset
from talkinghead.models import (
    Discriminator,
    Embedder,
    Generator,
    build_models,
    count_parameters,
    parameter_table,
)
from talkinghead.models.blocks import SelfAttention


def _inputs(cfg, b=2, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = cfg.image_size
    frames = torch.rand(b, k, 3, s, s, generator=g) * 2 - 1
    sketches = torch.rand(b, k, 3, s, s, generator=g) * 2 - 1
    return frames, sketches


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_shapes(preset):
    cfg = get_preset(preset).model
    torch.manual_seed(0)
    E, G, D = build_models(cfg, num_videos=5)
    frames, sketches = _inputs(cfg)
    e = E(frames, sketches)
    assert e.shape == (2, 2, cfg.embed_dim)
    psi = G.psi_from_embedding(e.mean(dim=1))
    assert psi.shape == (2, G.psi_size)
    fake = G(sketches[:, 0], psi)
    assert fake.shape == (2, 3, cfg.image_size, cfg.image_size)
    assert fake.abs().max() <= 1.0
    scores, feats = D(fake, sketches[:, 0], video_index=torch.tensor([0, 4]))
    assert scores.shape == (2,) and scores.dtype == torch.float32
    # One activation per downsampling block plus the final same-size block.
    assert len(feats) == cfg.disc_downsamples + 1
    final = cfg.image_size // 2**cfg.disc_downsamples
    assert feats[-1].shape[-2:] == (final, final)
    assert D.W.shape == (5, cfg.embed_dim) and D.w0.shape == (cfg.embed_dim,) and D.b.shape == ()


def test_embedding_size_differs_from_trunk_width():
    cfg = get_preset("tiny").model
    cfg.embed_dim = 48  # trunk ends at 64 channels: E and D add a linear map to N
    E, G, D = build_models(cfg, num_videos=2)
    frames, sketches = _inputs(cfg)
    e = E(frames, sketches)
    assert e.shape == (2, 2, 48)
    assert G.projection.weight.shape == (G.psi_size, 48)
    scores, _ = D(frames[:, 0], sketches[:, 0], w=e[:, 0].detach())
    assert scores.shape == (2,) and D.W.shape == (2, 48)


def test_paper_preset_single_forward():
    cfg = get_preset("paper").model
    torch.manual_seed(0)
    E, G, D = build_models(cfg, num_videos=1)
    frames, sketches = _inputs(cfg, b=1, k=1)
    with torch.no_grad():
        e = E(frames, sketches)
        fake = G(sketches[:, 0], G.psi_from_embedding(e[:, 0]))
        scores, feats = D(fake, sketches[:, 0], video_index=torch.tensor([0]))
    assert e.shape == (1, 1, 512)
    assert fake.shape == (1, 3, 256, 256)
    assert scores.shape == (1,) and len(feats) == 7 and feats[-1].shape == (1, 512, 4, 4)
    # Paper: self-attention at 32×32 in the downsampling parts (E, D, G's encoder) and at
    # 64×64 in G's decoder; the extra same-size residual block in D, not in E; P spectral-normed.
    from torch.nn.utils import parametrize

    from talkinghead.models.blocks import ResBlock

    for net in (E, D):  # 256 → 128, 64, 32: the third block's output is 32×32
        assert [i for i, st in enumerate(net.trunk.stages)
                if any(isinstance(m, SelfAttention) for m in st.modules())] == [2]
    assert not any(isinstance(m, ResBlock) for m in E.modules())
    assert isinstance(D.trunk.stages[-1], ResBlock)
    assert [i for i, d in enumerate(G.down) if any(isinstance(m, SelfAttention) for m in d.modules())] == [2]
    assert list(G.up_attention) == ["1"]  # 16 → 32 → 64: the second upsampling block is 64×64
    assert parametrize.is_parametrized(G.projection, "weight")


def test_psi_drives_generator():
    cfg = get_preset("tiny").model
    torch.manual_seed(0)
    G = Generator(cfg).eval()  # eval: spectral norm stops its power iteration, G is a pure function
    sketch = _inputs(cfg, b=1)[1][:, 0]
    e1, e2 = torch.randn(2, 1, cfg.embed_dim).unbind(0)
    psi1, psi2 = G.psi_from_embedding(e1), G.psi_from_embedding(e2)
    with torch.no_grad():
        out1, out1_again, out2 = G(sketch, psi1), G(sketch, psi1), G(sketch, psi2)
    assert torch.equal(out1, out1_again)
    assert (out1 - out2).abs().mean() > 1e-3
    # A (psi_size,) vector broadcasts over the batch.
    sketches = _inputs(cfg, b=3)[1][:, 0]
    with torch.no_grad():
        assert torch.allclose(G(sketches, psi1[0]), G(sketches, psi1.expand(3, -1)))
    with pytest.raises(ValueError):
        G(sketch, psi1[:, :-1])


def test_psi_layout_is_contiguous_and_every_slice_matters():
    cfg = get_preset("tiny").model
    torch.manual_seed(0)
    G = Generator(cfg).eval()
    slices = G.psi_slices()
    assert slices[0][1] == 0 and slices[-1][2] == G.psi_size
    assert all(a[2] == b[1] for a, b in zip(slices, slices[1:]))
    assert slices[-1][0] == "out_norm"
    sketch = _inputs(cfg, b=1)[1][:, 0]
    psi = torch.zeros(1, G.psi_size)
    with torch.no_grad():
        base = G(sketch, psi)
        for name, start, end in slices:
            bumped = psi.clone()
            bumped[:, start:end] = 0.5
            assert (G(sketch, bumped) - base).abs().max() > 1e-4, name


def test_initial_adain_scales_near_one():
    cfg = get_preset("small").model
    torch.manual_seed(0)
    E, G, _ = build_models(cfg, num_videos=1)
    frames, sketches = _inputs(cfg, b=2, k=1)
    with torch.no_grad():
        psi = G.psi_from_embedding(E(frames, sketches)[:, 0])
    # Effective scale is 1 + psi_scale; P's init keeps psi small relative to the embedding.
    assert psi.abs().max() < 0.5


def test_discriminator_projection():
    cfg = get_preset("tiny").model
    torch.manual_seed(0)
    D = Discriminator(cfg, num_videos=3).eval()
    frames, sketches = _inputs(cfg, b=2, k=1)
    image, sketch = frames[:, 0], sketches[:, 0]
    with torch.no_grad():
        D.W[1] += 1.0
        s0, f0 = D(image, sketch, video_index=torch.tensor([0, 0]))
        s1, _ = D(image, sketch, video_index=torch.tensor([1, 1]))
        sw, fw = D(image, sketch, w=D.W[1])
        v, _ = D.embed(image, sketch)
    assert (s0 - s1).abs().min() > 1e-3
    assert torch.allclose(sw, s1)
    assert torch.allclose(s0, v @ (D.W[0] + D.w0) + D.b, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(f0, fw))  # features do not depend on W
    with pytest.raises(ValueError):
        D(image, sketch)
    with pytest.raises(ValueError):
        D(image, sketch, video_index=torch.tensor([0, 0]), w=D.W[0])


@pytest.mark.parametrize("enabled", [True, False])
def test_spectral_norm_on_convs(enabled):
    cfg = get_preset("tiny").model
    cfg.spectral_norm = enabled
    for net in build_models(cfg, num_videos=2):
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        assert convs
        assert all(parametrize.is_parametrized(m, "weight") == enabled for m in convs)


def test_gradients_reach_embedder_through_projection():
    cfg = get_preset("tiny").model
    torch.manual_seed(0)
    E, G, D = build_models(cfg, num_videos=2)
    frames, sketches = _inputs(cfg)
    fake = G(sketches[:, 0], G.psi_from_embedding(E(frames, sketches).mean(1)))
    scores, _ = D(fake, sketches[:, 0], video_index=torch.tensor([0, 1]))
    (fake.abs().mean() - scores.mean()).backward()
    # W's gradient is sparse: only the rows of the videos in the batch, never a dense
    # (videos × N) tensor (at VoxCeleb2 scale W is larger than E, G and D together).
    assert D.W.grad.is_sparse and set(D.W.grad.coalesce().indices()[0].tolist()) == {0, 1}
    for net in (E, G, D):
        grads = [p.grad.to_dense() if p.grad is not None and p.grad.is_sparse else p.grad
                 for p in net.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads if g is not None)
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert G.projection.weight.grad.abs().sum() > 0


def test_spectral_norm_sigma_is_fp32_under_autocast():
    """The power iteration and σ run in fp32 even inside autocast: the normalised weight is the
    one computed without autocast (torch's own version runs them in bf16 on CUDA)."""
    from talkinghead.models.blocks import sn

    torch.manual_seed(0)
    layer = sn(torch.nn.Linear(256, 128), True).eval()  # eval: no power-iteration update
    plain = layer.weight.detach().clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = layer.weight.detach()
    assert inside.dtype == torch.float32 and torch.equal(inside, plain)
    sigma = torch.linalg.matrix_norm(plain, ord=2)
    assert abs(float(sigma) - 1.0) < 0.05  # after enough iterations σ(W/σ̂) ≈ 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_forward_is_finite(dtype):
    cfg = get_preset("tiny").model
    torch.manual_seed(0)
    E, G, D = build_models(cfg, num_videos=2)
    for m in E.modules():
        if isinstance(m, SelfAttention):
            m.gamma.data.fill_(1.0)  # make attention contribute (it starts as identity)
    frames, sketches = _inputs(cfg)
    with torch.autocast("cpu", dtype=dtype):
        e = E(frames, sketches)
        fake = G(sketches[:, 0], G.psi_from_embedding(e.float().mean(1)))
        scores, feats = D(fake, sketches[:, 0], video_index=torch.tensor([0, 1]))
    for t in (e, fake, scores, *feats):
        assert torch.isfinite(t).all()
    assert scores.dtype == torch.float32
    with torch.no_grad():
        e_fp32 = E(frames, sketches)
    assert torch.allclose(e.float(), e_fp32, rtol=0.1, atol=0.1 * e_fp32.abs().max().item())


def test_self_attention_softmax_in_fp32_under_large_logits():
    torch.manual_seed(0)
    attn = SelfAttention(32, spectral=False)
    attn.gamma.data.fill_(1.0)
    x = torch.randn(1, 32, 8, 8) * 300  # logits ~1e5: overflow fp16 if computed in it
    with torch.no_grad():
        ref = attn(x)
        with torch.autocast("cpu", dtype=torch.float16):
            low = attn(x)
    assert torch.isfinite(low).all()
    assert (low.float() - ref).abs().max() / ref.abs().max() < 0.05


def test_embedder_and_generator_overfit_one_batch():
    """60 Adam steps of E+G on one fixed episode must fit it: L1 falls to under a third."""
    cfg = get_preset("tiny").model
    torch.manual_seed(0)
    E, G = Embedder(cfg), Generator(cfg)
    s = cfg.image_size
    # A structured target (smooth colour blobs), with the sketch a deterministic function of it.
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
    target = torch.stack([torch.sin(3 * xx + c) * torch.cos(2 * yy - c) for c in (0.0, 1.0, 2.0)])
    target = torch.stack([target, target.flip(-1)])  # (2, 3, S, S)
    sketch = (target > 0.3).float() * 2 - 1
    frames, sketches = target[:, None], sketch[:, None]  # K = 1
    opt = torch.optim.Adam([*E.parameters(), *G.parameters()], lr=2e-3, betas=(0.5, 0.999))
    losses = []
    for _ in range(60):
        fake = G(sketch, G.psi_from_embedding(E(frames, sketches).mean(1)))
        loss = F.l1_loss(fake, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.3 * first, (first, last)


def test_parameter_counts_and_table():
    cfg = get_preset("tiny").model
    E, G, D = build_models(cfg, num_videos=4)
    assert count_parameters(G.projection) == cfg.embed_dim * G.psi_size
    d_one = count_parameters(Discriminator(cfg, num_videos=1))
    assert count_parameters(D) - d_one == 3 * cfg.embed_dim
    table = parameter_table(get_preset("tiny"))
    assert table.splitlines()[0].startswith("| network")
    assert f"{count_parameters(E):,}" in table and f"{count_parameters(G):,}" in table
