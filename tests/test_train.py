"""Training: exact resume, two-process DDP = one process, NaN stop, cpu-tiny artefacts, run-folder safety.

All runs are tiny (32-64 px crops, 2 clips, a few steps) on synthetic videos or the shared training video.
"""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dense_ulearn.encoder import build_encoder, load_encoder
from dense_ulearn.train import (NonFiniteLossError, TrainHooks, load_checkpoint, load_config, resume_config, train)

TB_SCALARS = {"loss/total", "loss/st", "loss/cv", "lr/weights", "lr/biases", "grad_norm", "speed/it_per_s", "epoch"}


def tiny_config(runs_dir, name, **changes):
    "cpu-tiny shrunk to 32 px crops (4x4 feature maps) of 3 synthetic videos, 2 clips per step, no workers."
    settings = dict(runs_dir=str(runs_dir), name=name, crop=32, short_side=[32, 40], synthetic_videos=3,
                    synthetic_frames=10, synthetic_size=[40, 56], clips_per_video=2, batch_size=2, workers=0,
                    iterations=4, log_every=1, image_every=2, ckpt_every=2, progress=False, cpu_threads=1,
                    loss=dict(anchor_grid=4, cv_grid=2))
    settings.update(changes)
    return load_config("cpu-tiny", overrides=settings)


class StopAfter:
    "on_step_end hook that raises KeyboardInterrupt (as Ctrl-C would) once `steps` steps are done."
    def __init__(self, steps): self.steps = steps
    def __call__(self, done, encoder, out):
        if done == self.steps: raise KeyboardInterrupt


def assert_same_state(a: dict, b: dict):
    "Bit-identical model and optimiser state of two checkpoints."
    assert a["step"] == b["step"]
    for k, v in a["model"].items(): assert torch.equal(v, b["model"][k]), k
    for i, state in a["optimizer"]["state"].items():
        for k, v in state.items(): assert torch.equal(v, b["optimizer"]["state"][i][k]), (i, k)
    assert a["scheduler"] == b["scheduler"]


def test_resume_is_bit_exact(tmp_path):
    straight = load_checkpoint(train(tiny_config(tmp_path, "straight")) / "checkpoints" / "last.pt")
    cfg = tiny_config(tmp_path, "resumed")
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C after 2 of 4 steps writes a checkpoint
        train(cfg, hooks=TrainHooks(on_step_end=StopAfter(2)))
    run_dir = tmp_path / "resumed"
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 2
    train(resume_config(run_dir), resume=True)
    resumed = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert_same_state(straight, resumed)
    assert resumed["step"] == 4
    initial = load_checkpoint(run_dir / "checkpoints" / "step_2.pt")
    assert not torch.equal(initial["model"]["head.conv2.weight"], resumed["model"]["head.conv2.weight"])
    assert len(yaml_history(run_dir)) == 2  # config.yaml records the start and the resume


def yaml_history(run_dir):
    import yaml
    return yaml.safe_load((run_dir / "config.yaml").read_text())["run"]["history"]


def test_extending_a_run_equals_the_longer_run(tmp_path):
    "Budgets are iterations: a 2-step run resumed with iterations=4 is the 4-step run."
    straight = load_checkpoint(train(tiny_config(tmp_path, "four")) / "checkpoints" / "last.pt")
    short = train(tiny_config(tmp_path, "two", iterations=2))
    train(resume_config(short, overrides=["iterations=4"]), resume=True)
    assert_same_state(straight, load_checkpoint(short / "checkpoints" / "last.pt"))


def test_non_finite_loss_stops_with_a_loadable_checkpoint(tmp_path):
    def poison(step, out): return {**out, "loss": out["loss"] * math.nan} if step == 3 else out
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 3") as err:
        train(tiny_config(tmp_path, "nan", iterations=6), hooks=TrainHooks(on_losses=poison))
    assert "--resume" in str(err.value) and "after 3 good steps" in str(err.value)
    last = tmp_path / "nan" / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last)
    assert ckpt["step"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    load_encoder(last)  # usable with --checkpoint
    train(resume_config(tmp_path / "nan"), resume=True)  # the run continues past the bad step
    assert load_checkpoint(last)["step"] == 6


def test_existing_run_folder_is_never_replaced_silently(tmp_path):
    cfg = tiny_config(tmp_path, "once", iterations=1)
    train(cfg)
    with pytest.raises(FileExistsError, match="--overwrite"):
        train(cfg)
    train(cfg, overwrite=True)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("not a run")
    with pytest.raises(FileExistsError, match="not a dense-ulearn run folder"):
        train(tiny_config(tmp_path, "precious", iterations=1), overwrite=True)
    assert (tmp_path / "precious" / "notes.txt").read_text() == "not a run"
    with pytest.raises(FileNotFoundError, match="no checkpoints/last.pt"):
        train(tiny_config(tmp_path, "never-ran"), resume=True)


def test_speed_options_do_not_break_a_cpu_run(tmp_path):
    "bf16 autocast, channels-last and the fused optimiser (the CUDA defaults) also run on the CPU."
    cfg = tiny_config(tmp_path, "fast", iterations=2, amp_bf16=True, channels_last=True, fused_optimizer=True, workers=1)
    ckpt = load_checkpoint(train(cfg) / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def read_tensorboard(tb_dir: Path) -> tuple[set, set]:
    "Scalar and image tags of the TensorBoard event files in `tb_dir`."
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tb_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return set(acc.Tags()["scalars"]), set(acc.Tags()["images"])


def test_cpu_tiny_on_real_video_writes_every_artefact(tmp_path, video_root):
    "The preset as it is (128 px crops, 4 clips, a loader worker), for 2 steps on 2 of the shared videos."
    cfg = load_config("cpu-tiny", overrides=dict(video_root=str(video_root), runs_dir=str(tmp_path), name="tiny",
                                                 iterations=2, log_every=1, image_every=2, ckpt_every=1,
                                                 progress=False, sequences=["bus", "surf"], cpu_threads=1))
    run_dir = train(cfg)
    for name in ("config.yaml", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/step_1.pt", "checkpoints/step_2.pt"):
        assert (run_dir / name).is_file(), name
    scalars, images = read_tensorboard(run_dir / "tb")
    assert TB_SCALARS <= scalars, TB_SCALARS - scalars
    assert "pseudo_labels" in images
    saved = resume_config(run_dir)
    assert (saved.preset, saved.crop, saved.iterations, saved.video_root) == ("cpu-tiny", 128, 2, str(video_root))
    history = yaml_history(run_dir)[0]
    assert {"command", "git", "versions", "iterations_per_epoch"} <= set(history)
    assert history["iterations_per_epoch"] == 2 * 8 // 4  # 2 videos x 8 clips per video // batch 4
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["format"] == "dense-ulearn" and ckpt["config"]["name"] == "tiny"
    assert {"torch", "cuda", "numpy", "python"} <= set(ckpt["rng"])


# --- two processes (gloo, CPU) against one process with the same global batch ---
#
# Exactness is checked in float64, where rounding cannot flip a pseudo label: the pseudo labels are an arg-max, so
# in float32 a near-tie can go either way between two summation orders, which changes that pixel's gradient (not the
# loss) and makes fp32 runs drift apart after a few steps. In float64 the 2-process gradients equal the 1-process ones
# to ~1e-14. The float32 run through `train()` then checks the integration: ranks identical, the first loss equal.

WORLD, GLOBAL_BATCH, STEPS = 2, 4, 2  # the float32 train() runs
F64_BATCH, F64_STEPS = 2, 2  # the float64 runs (slow convolutions: keep them small)
DDP_SETTINGS = dict(iterations=STEPS, batch_size=GLOBAL_BATCH, ckpt_every=0, image_every=0)


def random_batches(n_steps, batch, dtype=torch.float64):
    "Fixed global batches (main, aug, theta) of 3-frame 32 px clips with zoomed and flipped views."
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n_steps):
        s = 0.5 + 0.5 * torch.rand(batch, generator=g)
        flip = torch.where(torch.rand(batch, generator=g) < 0.5, -1.0, 1.0)
        theta = torch.zeros(batch, 2, 3); theta[:, 0, 0], theta[:, 1, 1] = flip * s, s
        out.append({"main": torch.randn(batch, 3, 3, 32, 32, generator=g, dtype=dtype),
                    "aug": torch.randn(batch, 3, 3, 32, 32, generator=g, dtype=dtype), "theta": theta.to(dtype)})
    return out


def float64_steps(cfg, rank=0, world=1):
    "F64_STEPS Adam steps in float64 through the training pieces; this rank's share of each global batch."
    from dense_ulearn.train import (DistInfo, build_optimizer, build_scheduler, gather_rows, initial_encoder,
                                    synchronise_batchnorm, train_step, training_module)
    encoder = initial_encoder(cfg).double()
    if world > 1: encoder = synchronise_batchnorm(encoder, "cpu")
    optimizer, device = build_optimizer(encoder, cfg), torch.device("cpu")
    scheduler = build_scheduler(optimizer, cfg)
    speed = dict(amp_bf16=False, channels_last=False)
    net = training_module(encoder, speed, cfg, DistInfo(rank, world), device)
    share, losses = F64_BATCH // world, []
    for step, batch in enumerate(random_batches(F64_STEPS, F64_BATCH)):
        mine = {k: v[rank * share:(rank + 1) * share] for k, v in batch.items()}
        out = train_step(net, mine, step, cfg, optimizer, scheduler, device, gather_rows if world > 1 else None,
                         TrainHooks())
        losses.append(out["loss"].item())
    return losses, {k: v.detach().clone() for k, v in encoder.state_dict().items()}


def _ddp_worker(rank, rendezvous, cfg, out_dir):
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        f64_losses, f64_state = float64_steps(cfg, rank, WORLD)
        losses = []
        def record(done, encoder, out):
            losses.append(out["loss"].item())
            if done == cfg.iterations:
                torch.save({"f64_losses": f64_losses, "f64_state": f64_state, "losses": losses,
                            "state": {k: v.detach().clone() for k, v in encoder.state_dict().items()}},
                           Path(out_dir) / f"rank{rank}.pt")
        train(cfg, hooks=TrainHooks(on_step_end=record))
    finally: dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    "One 2-process gloo run (mp.spawn, file:// rendezvous) and the 1-process runs it is compared with."
    tmp = tmp_path_factory.mktemp("ddp")
    cfg = tiny_config(tmp, "ddp", **DDP_SETTINGS)
    mp.spawn(_ddp_worker, args=(f"file://{tmp / 'rendezvous'}", cfg, str(tmp)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    single_losses = []
    single_dir = train(tiny_config(tmp, "single", **DDP_SETTINGS),
                       hooks=TrainHooks(on_step_end=lambda d, e, out: single_losses.append(out["loss"].item())))
    return dict(ranks=ranks, cfg=cfg, tmp=tmp, single_losses=single_losses, single_dir=single_dir)


def test_ddp_in_float64_equals_one_process_with_the_same_global_batch(ddp_runs):
    losses, state = float64_steps(ddp_runs["cfg"])
    ddp = ddp_runs["ranks"][0]
    assert torch.allclose(torch.tensor(ddp["f64_losses"], dtype=torch.float64), torch.tensor(losses, dtype=torch.float64),
                          rtol=1e-10, atol=0)
    initial = build_encoder(seed=ddp_runs["cfg"].seed).double().state_dict()
    for k, v in state.items(): assert torch.allclose(ddp["f64_state"][k], v, rtol=1e-9, atol=1e-12), k
    moved = max((state[k] - initial[k]).abs().max().item() for k in initial if k.endswith("weight"))
    assert moved > 1e-5  # Adam moves the weights by ~lr = 1e-4 per step, far above the tolerance
    for k, v in ddp_runs["ranks"][1]["f64_state"].items(): assert torch.equal(v, ddp["f64_state"][k]), k


def test_two_process_train_keeps_ranks_identical_and_starts_on_the_single_process_loss(ddp_runs):
    rank0, rank1 = ddp_runs["ranks"]
    for k, v in rank0["state"].items(): assert torch.equal(v, rank1["state"][k]), k  # the ranks agree bit for bit
    assert rank0["losses"] == rank1["losses"]  # every rank computes the same global-batch loss
    assert rank0["losses"][0] == pytest.approx(ddp_runs["single_losses"][0], rel=1e-6)  # step 1: same data, same loss
    assert rank0["losses"] == pytest.approx(ddp_runs["single_losses"], rel=5e-2)  # later: fp32 label flips (above)
    saved = load_checkpoint(ddp_runs["tmp"] / "ddp" / "checkpoints" / "last.pt")  # rank 0 saved what it trained
    assert saved["step"] == STEPS
    for k, v in saved["model"].items(): assert torch.equal(v, rank0["state"][k]), k


def test_validation_hook_scores_davis_and_keeps_the_best(tmp_path, davis_root):
    pytest.importorskip("dense_ulearn.propagate")
    cfg = tiny_config(tmp_path, "val", iterations=2, val_every=2, val_davis_root=str(davis_root),
                      val_sequences=["car-shadow"], val_scale=0.25)
    run_dir = train(cfg)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "val/J&F-Mean" in r]
    assert len(rows) == 1 and rows[0]["step"] == 2 and 0 <= rows[0]["val/J&F-Mean"] <= 1
    assert load_checkpoint(run_dir / "checkpoints" / "best.pt")["step"] == 2
    assert len(list((run_dir / "val" / "step_2" / "car-shadow").glob("*.png"))) == 40


def test_resume_keeps_a_better_best_checkpoint(tmp_path, monkeypatch):
    import dense_ulearn.train as train_module
    scores = iter([0.5, 0.7, 0.6])  # J&F after steps 1, 2 and (resumed) 3
    monkeypatch.setattr(train_module, "check_validation", lambda cfg: None)
    monkeypatch.setattr(train_module, "validate", lambda encoder, cfg, out: {"val/J&F-Mean": next(scores)})
    cfg = tiny_config(tmp_path, "best", iterations=2, val_every=1, ckpt_every=1, image_every=0)
    run_dir = train(cfg)
    best = run_dir / "checkpoints" / "best.pt"
    assert load_checkpoint(best)["step"] == 2 and load_checkpoint(best)["val"] == {"val/J&F-Mean": 0.7}
    train(resume_config(run_dir, overrides=["iterations=3"]), resume=True)
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 3
    assert load_checkpoint(best)["step"] == 2  # 0.6 after the resume does not replace the 0.7 kept before it


def test_signals_become_a_stop_request_then_an_interrupt():
    import os, signal
    from dense_ulearn.train import StopRequest
    stop = StopRequest()
    before = signal.getsignal(signal.SIGTERM)
    with stop.installed():
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's polite kill: only a request
        assert stop.reason == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second signal interrupts at once
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored


def test_sigterm_during_training_checkpoints_and_stops(tmp_path):
    import os, signal
    def term_at_2(done, encoder, out):
        if done == 2: os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="stopped by SIGTERM after 2 steps"):
        train(tiny_config(tmp_path, "term", iterations=5, ckpt_every=0), hooks=TrainHooks(on_step_end=term_at_2))
    assert load_checkpoint(tmp_path / "term" / "checkpoints" / "last.pt")["step"] == 2


@pytest.mark.slow
def test_compile_flag_runs_on_cpu(tmp_path):
    "torch.compile (opt-in on CUDA) also works on the CPU: slow, it compiles the encoder first."
    ckpt = load_checkpoint(train(tiny_config(tmp_path, "compiled", iterations=2, compile=True)) / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_time_limit_stops_cleanly_with_a_checkpoint_and_the_last_scalars(tmp_path):
    run_dir = train(tiny_config(tmp_path, "timed", iterations=50, max_minutes=1e-6, ckpt_every=0, log_every=10))
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 1  # max_minutes is checked after each step
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1]
