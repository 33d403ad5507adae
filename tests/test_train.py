"""Meta-learning: resumption is exact, NaNs stop the run cleanly, DDP keeps replicas equal."""

import os
import socket
import subprocess
import sys

import pytest
import torch

from talkinghead.config import get_preset
from talkinghead.errors import TalkingHeadError
from talkinghead.checkpoint import load_checkpoint
from talkinghead.train.meta import train_meta


def _config(steps, every):
    cfg = get_preset("tiny").override([f"train.steps={steps}", f"train.checkpoint_every={every}",
                                       "train.log_every=1", "train.image_every=1000"])
    return cfg


def _weights(path):
    ckpt = load_checkpoint(path)
    return {k: v for k, v in ckpt.tensors.items() if not k.startswith("rng")}


def test_resume_is_bit_for_bit(synthetic_dataset, tmp_path):
    straight = train_meta(synthetic_dataset, tmp_path / "a", _config(6, 3), progress=False)
    train_meta(synthetic_dataset, tmp_path / "b", _config(3, 3), progress=False)
    resumed = train_meta(synthetic_dataset, tmp_path / "b", _config(6, 3), resume=True, progress=False)
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    assert load_checkpoint(resumed).step == 6
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed run differs in {different[:5]}"
    # and training really changed the weights
    first = _weights(tmp_path / "b" / "checkpoints" / "step_0000003.safetensors") \
        if (tmp_path / "b" / "checkpoints" / "step_0000003.safetensors").exists() else None
    if first is not None:
        assert any(not torch.equal(first[k], b[k]) for k in b if k.startswith("G."))


def test_checkpoint_contents(synthetic_dataset, tmp_path):
    path = train_meta(synthetic_dataset, tmp_path / "run", _config(2, 2), progress=False)
    ckpt = load_checkpoint(path)
    assert ckpt.config.preset == "tiny" and ckpt.step == 2
    assert len(ckpt.videos) == 3 and ckpt.has("E") and ckpt.has("G") and ckpt.has("D")
    assert any(k.startswith("optim.g.") for k in ckpt.tensors)
    assert (tmp_path / "run" / "latest.safetensors").is_file()
    assert (tmp_path / "run" / "samples" / "step_0000001.png").is_file()
    assert any((tmp_path / "run" / "tb").iterdir())


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(synthetic_dataset, tmp_path, monkeypatch):
    import talkinghead.train.meta as meta

    real = meta.generator_losses
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        total, terms = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= 4:
            total = total * float("nan")
        return total, terms

    monkeypatch.setattr(meta, "generator_losses", poisoned)
    with pytest.raises(TalkingHeadError, match="NaN/Inf.*step_0000002"):
        train_meta(synthetic_dataset, tmp_path / "run", _config(10, 2), progress=False)
    assert load_checkpoint(tmp_path / "run" / "latest.safetensors").step == 2


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(TalkingHeadError, match="model.safetensors"):
        load_checkpoint(bad)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_keep_identical_weights(synthetic_dataset, tmp_path):
    """torchrun with 2 CPU processes (gloo): every checkpoint verifies that both ranks hold
    identical weights (SHA-1 of all tensors); we check the recorded digests."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           f"--master_port={_free_port()}", "--master_addr=127.0.0.1",
           "-m", "talkinghead.cli", "train", str(synthetic_dataset), "--preset", "tiny",
           "--out", str(tmp_path / "ddp"), "--steps", "3", "--no-progress",
           "--set", "train.checkpoint_every=3", "train.batch_size=1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpt = load_checkpoint(tmp_path / "ddp" / "latest.safetensors")
    digests = ckpt.extra["replica_digests"]
    assert ckpt.extra["world_size"] == 2 and len(digests) == 2 and digests[0] == digests[1]
    assert ckpt.step == 3


def test_cli_train_with_held_out_text_split(synthetic_dataset, tmp_path):
    """A text split lists only dev identities; `train --split` trains on all the others."""
    from talkinghead.cli import main

    split = tmp_path / "heldout.txt"
    split.write_text("# held out\nperson1\n")
    rc = main(["train", str(synthetic_dataset), "--preset", "tiny", "--out", str(tmp_path / "run"),
               "--split", str(split), "--no-progress",
               "--set", "train.steps=1", "train.image_every=1000", "train.checkpoint_every=1000"])
    assert rc == 0
    videos = load_checkpoint(tmp_path / "run" / "latest.safetensors").videos
    assert len(videos) == 2 and not any("person1" in str(v) for v in videos)

    everyone = tmp_path / "all.txt"
    everyone.write_text("person0\nperson1\nperson2\n")
    assert main(["train", str(synthetic_dataset), "--preset", "tiny", "--out", str(tmp_path / "run2"),
                 "--split", str(everyone), "--no-progress", "--set", "train.steps=1"]) == 2


@pytest.mark.parametrize("pulls_embedder", [False, True])
def test_embedding_match_moves_W_towards_e_hat_and_E_only_if_asked(synthetic_dataset, pulls_embedder):
    """L_MCH alone (every other loss weight 0): W_i always moves towards ê_i; E moves only with
    ``loss.embedding_match_pulls_embedder`` (the paper's form, which collapsed our first run)."""
    from torch.utils.data import default_collate

    from talkinghead.data.episodes import EpisodeDataset
    from talkinghead.models import build_models
    from talkinghead.losses import build_content_loss
    from talkinghead.train.meta import MetaNetworks, meta_step

    cfg = get_preset("tiny").override([
        "loss.pixel_fallback=0", "loss.vgg19=0", "loss.face=0", "loss.adversarial=0",
        "loss.feature_matching=0", f"loss.embedding_match_pulls_embedder={pulls_embedder}",
        "train.disc_steps=1"])
    torch.manual_seed(0)
    E, G, D = build_models(cfg.model, num_videos=3)
    data = EpisodeDataset(synthetic_dataset, shots=2, size=cfg.model.image_size, seed=0)
    batch = default_collate([data[i] for i in range(2)])
    from talkinghead.train.trainer import build_optimizers

    cfg = cfg.override(["train.lr_generator=1e-3", "train.lr_discriminator=1e-3", "train.lr_embedding_rows=1e-3"])
    nets = MetaNetworks.from_models(E, G, D, build_optimizers(E, G, D, cfg, torch.device("cpu")),
                                    build_content_loss(cfg.loss, torch.device("cpu")))
    e_before = {k: v.clone() for k, v in E.state_dict().items()}
    rows = batch["video_index"]
    with torch.no_grad():
        e_hat = E(batch["frames"].float() / 127.5 - 1, batch["sketches"].float() / 127.5 - 1).mean(dim=1)
    gap_before = (D.W[rows] - e_hat).abs().mean().item()
    meta_step(batch, nets, cfg, torch.device("cpu"))
    assert (D.W[rows] - e_hat).abs().mean().item() < gap_before  # W_i moved towards ê_i
    e_moved = any(not torch.equal(v, E.state_dict()[k]) for k, v in e_before.items()
                  if not k.endswith(("._u", "._v")))  # power-iteration buffers move in any forward
    assert e_moved == pulls_embedder


def test_init_from_takes_chosen_networks_with_fresh_optimisers(synthetic_dataset, tmp_path):
    from talkinghead.cli import main

    first = train_meta(synthetic_dataset, tmp_path / "a", _config(2, 2), progress=False)
    frozen = _config(1, 1).override(["train.lr_generator=0", "train.lr_discriminator=0", "train.lr_embedding_rows=0"])
    second = train_meta(synthetic_dataset, tmp_path / "b", frozen, init_from=first, init_networks=("G", "D"),
                        progress=False)
    a, b = load_checkpoint(first), load_checkpoint(second)
    assert b.step == 1
    # (spectral norm's power-iteration vectors _u/_v move in every training forward, even at lr 0)
    weights = [k for k in a.tensors if not k.endswith(("._u", "._v")) and not k.startswith(("optim", "rng"))]
    for name in ("G", "D"):  # taken over (learning rate 0: unchanged), W rows included (same videos)
        assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in weights if k.startswith(name + "."))
    assert any(not torch.equal(a.tensors[k], b.tensors[k]) for k in weights if k.startswith("E."))
    rc = main(["train", str(synthetic_dataset), "--out", str(tmp_path / "a"), "--resume",
               "--init-from", str(first), "--no-progress"])
    assert rc == 2


def _no_power_iteration(tensors):
    """Weights only: spectral norm's _u/_v buffers move in every training forward, even at lr 0."""
    return {k: v for k, v in tensors.items() if not k.endswith(("._u", "._v")) and not k.startswith(("optim", "rng"))}


def test_resume_trains_at_the_new_learning_rate(synthetic_dataset, tmp_path):
    """The checkpoint's optimiser state holds the old rates; a resume with new ones must use
    them (the NaN message's advice is to lower them and resume)."""
    first = train_meta(synthetic_dataset, tmp_path / "run", _config(2, 2), progress=False)
    frozen = _config(3, 3).override(["train.lr_generator=0", "train.lr_discriminator=0", "train.lr_embedding_rows=0"])
    resumed = train_meta(synthetic_dataset, tmp_path / "run", frozen, resume=True, progress=False)
    a, b = _no_power_iteration(load_checkpoint(first).tensors), _no_power_iteration(load_checkpoint(resumed).tensors)
    assert load_checkpoint(resumed).step == 3
    moved = [k for k in a if not torch.equal(a[k], b[k])]
    assert not moved, f"trained at the checkpoint's old rate: {moved[:3]}"
    assert '"lr": 0' in load_checkpoint(resumed).meta["optim.g"]


def test_disc_steps_zero_trains_e_and_g_only(synthetic_dataset, tmp_path):
    path = train_meta(synthetic_dataset, tmp_path / "run", _config(2, 2).override(["train.disc_steps=0"]),
                      progress=False)
    ckpt = load_checkpoint(path)
    assert ckpt.step == 2 and not any(k.startswith("optim.d.") for k in ckpt.tensors)


def test_fresh_disc_batches_consume_more_episodes_and_resume_exactly(synthetic_dataset, tmp_path):
    cfg = _config(4, 2).override(["train.disc_fresh_batches=true"])
    straight = train_meta(synthetic_dataset, tmp_path / "a", cfg, progress=False)
    train_meta(synthetic_dataset, tmp_path / "b", cfg.override(["train.steps=2"]), progress=False)
    resumed = train_meta(synthetic_dataset, tmp_path / "b", cfg, resume=True, progress=False)
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_existing_run_is_refused_without_resume_or_overwrite(synthetic_dataset, tmp_path, capsys):
    from talkinghead.cli import main

    args = ["train", str(synthetic_dataset), "--preset", "tiny", "--out", str(tmp_path / "run"), "--no-progress",
            "--set", "train.steps=2", "train.checkpoint_every=1", "train.keep_checkpoints=5"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args[:-1] + ["train.steps=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already holds a training run" in err and "--overwrite" in err
    assert main(args[:-1] + ["train.steps=1", "--overwrite"]) == 0
    left = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert left == ["step_0000001.safetensors"]  # the old run's step 2 is gone, the new step 1 kept
    assert load_checkpoint(tmp_path / "run" / "latest.safetensors").step == 1


def test_missing_vgg19_fails_fast_unless_allowed(synthetic_dataset, tmp_path, monkeypatch, capsys):
    """The paper preset requires VGG19: no silent pixel-L1 stand-in."""
    import talkinghead.losses.content as content
    from talkinghead.cli import main

    monkeypatch.setattr(content, "load_vgg19", lambda *args, **kwargs: None)
    args = ["train", str(synthetic_dataset), "--preset", "tiny", "--out", str(tmp_path / "run"), "--no-progress",
            "--set", "train.steps=1", "loss.require_vgg19=true"]
    assert main(args) == 2
    assert "VGG19 weights not found" in capsys.readouterr().err
    assert main(args + ["--allow-pixel-loss"]) == 0
    assert get_preset("paper").loss.require_vgg19 and not get_preset("small").loss.require_vgg19


def _rank_env(rank, port):
    return dict(os.environ, OMP_NUM_THREADS="1", RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def _train_cmd(data, out, *extra):
    return [sys.executable, "-m", "talkinghead.cli", "train", str(data), "--preset", "tiny", "--out", str(out),
            "--no-progress", *extra]


def test_ddp_sigterm_to_one_rank_stops_both_at_the_same_step(synthetic_dataset, tmp_path):
    """Pre-emption: SIGTERM reaches one rank. The stop flag is agreed across ranks, so both stop
    after the same step, checkpoint identical weights, exit 143; the run then resumes (with the
    same world size; a different one is refused)."""
    import re
    import signal
    import time

    out = tmp_path / "ddp"
    args = ["--steps", "1000", "--set", "train.checkpoint_every=2", "train.batch_size=1", "train.log_every=1000"]
    port = _free_port()
    procs = [subprocess.Popen(_train_cmd(synthetic_dataset, out, *args), env=_rank_env(r, port),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        deadline = time.time() + 180
        while not (out / "checkpoints" / "step_0000002.safetensors").exists():
            assert time.time() < deadline and all(p.poll() is None for p in procs), "training did not start"
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGTERM)
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [143, 143], [r[1][-1500:] for r in results]
    stopped = [re.search(r"stopped \(terminated\) at step (\d+)", err) for _, err in results]
    assert all(stopped), [err[-500:] for _, err in results]
    steps = {int(m.group(1)) for m in stopped}
    assert len(steps) == 1
    (step,) = steps
    ckpt = load_checkpoint(out / "latest.safetensors")
    assert ckpt.step == step and ckpt.extra["world_size"] == 2
    digests = ckpt.extra["replica_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]

    # one process cannot continue a 2-process run's exact batch order
    single = subprocess.run(_train_cmd(synthetic_dataset, out, "--resume", "--steps", str(step + 1)),
                            capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert single.returncode == 2 and "trained by 2 process(es), this run has 1" in single.stderr

    port = _free_port()
    procs = [subprocess.Popen(_train_cmd(synthetic_dataset, out, "--resume", "--steps", str(step + 2)),
                              env=_rank_env(r, port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-1500:] for r in results]
    assert load_checkpoint(out / "latest.safetensors").step == step + 2


def test_resume_from_a_checkpoint_with_one_optimizer_for_all_of_D(synthetic_dataset, tmp_path):
    """Checkpoints written before W had its own (sparse) optimiser hold one Adam over all of D;
    such a run resumes, W's moments moving to the new optimiser."""
    from talkinghead.checkpoint import load_networks, save_checkpoint
    from talkinghead.models import build_models

    first = load_checkpoint(train_meta(synthetic_dataset, tmp_path / "new", _config(1, 1), progress=False))
    E, G, D = build_models(first.config.model, num_videos=len(first.videos))
    load_networks(first, {"E": E, "G": G, "D": D})
    opt_g = torch.optim.Adam(list(E.parameters()) + list(G.parameters()))
    opt_d = torch.optim.Adam(D.parameters())
    for p in [*E.parameters(), *G.parameters(), *D.parameters()]:
        p.grad = torch.ones_like(p)
    opt_g.step()
    opt_d.step()
    (tmp_path / "old" / "checkpoints").mkdir(parents=True)
    legacy = save_checkpoint(tmp_path / "old" / "checkpoints" / "step_0000001.safetensors", first.config,
                             {"E": E, "G": G, "D": D}, 1, optimizers={"g": opt_g, "d": opt_d}, videos=first.videos,
                             extra={"world_size": 1})
    resumed = load_checkpoint(train_meta(synthetic_dataset, tmp_path / "old", _config(2, 1), resume=legacy,
                                         progress=False))
    assert resumed.step == 2 and "optim.w" in resumed.meta
    assert resumed.tensors["optim.w.0.exp_avg_sq"].shape == D.W.shape


def test_meta_step_returns_named_result_and_fits_one_batch(synthetic_dataset):
    """meta_step's result has its fields by name with their shapes; repeated on one batch of a
    warp-guided tiny model with only the pixel loss, G's loss falls."""
    from torch.utils.data import default_collate

    from talkinghead.data.episodes import EpisodeDataset
    from talkinghead.losses import build_content_loss
    from talkinghead.models import build_models
    from talkinghead.train.meta import MetaNetworks, MetaStepResult, meta_step
    from talkinghead.train.trainer import build_optimizers

    cfg = get_preset("tiny").override(["model.warp_guidance=true", "loss.vgg19=0", "loss.face=0",
                                       "loss.adversarial=0", "loss.feature_matching=0", "train.disc_steps=1",
                                       "train.lr_generator=2e-3"])
    torch.manual_seed(0)
    E, G, D = build_models(cfg.model, num_videos=3)
    data = EpisodeDataset(synthetic_dataset, shots=2, size=cfg.model.image_size, seed=0)
    batch = default_collate([data[i] for i in range(2)])
    nets = MetaNetworks.from_models(E, G, D, build_optimizers(E, G, D, cfg, torch.device("cpu")),
                                    build_content_loss(cfg.loss, "cpu"))
    results = [meta_step(batch, nets, cfg, torch.device("cpu")) for _ in range(25)]
    first, last = results[0], results[-1]
    assert isinstance(first, MetaStepResult)
    s = cfg.model.image_size
    assert first.shown.shape == (2, 1, 3, s, s)  # a warp-guided G's step shows its guide
    assert first.fake.shape == first.target.shape == first.target_sketch.shape == (2, 3, s, s)
    assert first.loss_g.dim() == 0 and torch.isfinite(first.loss_d)
    assert {"content/pixel", "embedding_match", "embedding/mean_abs"} <= set(first.terms)
    assert last.loss_g.item() < 0.7 * first.loss_g.item()
