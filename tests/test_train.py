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
from dense_ulearn.checkpoints import load_checkpoint, resume_config
from dense_ulearn.config import load_config
from dense_ulearn.train import NonFiniteLossError, TrainHooks, train

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
DDP_SETTINGS = dict(iterations=STEPS, batch_size=GLOBAL_BATCH, ckpt_every=0, image_every=0, amp_bf16=False)  # fp32 on any CPU


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
    from dense_ulearn.distributed import DistInfo, gather_rows, synchronise_batchnorm
    from dense_ulearn.train import build_optimizer, build_scheduler, initial_encoder, train_step, training_module
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


def _ddp_worker(rank, rendezvous, cfg, out_dir, with_float64=True):
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        f64_losses, f64_state = float64_steps(cfg, rank, WORLD) if with_float64 else (None, None)
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


def test_two_process_train_in_bf16_autocast_keeps_fp32_statistics_and_identical_ranks(tmp_path):
    "bf16 autocast on a CPU (the default where the CPU has native bf16): the synchronised BN must take bf16 inputs."
    cfg = tiny_config(tmp_path, "ddp-bf16", **DDP_SETTINGS | dict(amp_bf16=True))
    mp.spawn(_ddp_worker, args=(f"file://{tmp_path / 'rendezvous'}", cfg, str(tmp_path), False), nprocs=WORLD, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD))
    for k, v in rank0["state"].items(): assert torch.equal(v, rank1["state"][k]), k
    assert rank0["losses"] == rank1["losses"] and all(math.isfinite(x) for x in rank0["losses"])
    stats = [v for k, v in rank0["state"].items() if k.endswith("running_mean")]
    assert stats and all(v.dtype == torch.float32 for v in stats)


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


# --- user mistakes: one clear error, nothing deleted, nothing left blocking the next try ---

def test_overwrite_only_deletes_run_folders_that_train_wrote(tmp_path, capsys):
    "A folder with checkpoints/ and the user's notes is not a run folder: --overwrite refuses and deletes nothing."
    mine = tmp_path / "mystuff"
    (mine / "checkpoints").mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="not a dense-ulearn run folder") as err:
            train(tiny_config(tmp_path, "mystuff", iterations=1), overwrite=overwrite)
        assert ("nothing was deleted" in str(err.value)) == overwrite
    assert (mine / "notes.txt").read_text() == "my notes" and (mine / "checkpoints").is_dir()

    run_dir = train(tiny_config(tmp_path, "ours", iterations=1))
    capsys.readouterr()
    train(tiny_config(tmp_path, "ours", iterations=1), overwrite=True)
    assert f"deleted {run_dir}" in capsys.readouterr().err  # says what it deleted


def test_a_run_folder_from_before_the_marker_is_resumed_but_never_deleted(tmp_path):
    from dense_ulearn.options import OUTPUT_MARKER
    run_dir = train(tiny_config(tmp_path, "older", iterations=1, ckpt_every=0, image_every=0))
    (run_dir / OUTPUT_MARKER).unlink()  # as written before run folders were marked
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="delete it yourself") as err:
            train(tiny_config(tmp_path, "older", iterations=1), overwrite=overwrite)
        assert f"--resume {run_dir}" in str(err.value)
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 1
    train(resume_config(run_dir, overrides=["iterations=2"]), resume=True)
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 2


def test_a_run_that_fails_at_start_leaves_no_folder_behind(tmp_path):
    "Bad initial weights, missing data, a NaN at step 0: the same command then runs (no --overwrite needed)."
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="bad.pt"):
        train(tiny_config(tmp_path, "again", iterations=1, init_checkpoint=str(bad)))
    assert not (tmp_path / "again").exists()
    with pytest.raises((ValueError, FileNotFoundError)):
        train(tiny_config(tmp_path, "again", iterations=1, video_root=str(tmp_path / "no-such-videos")))
    assert not (tmp_path / "again").exists()

    def nan_at_0(step, out): return {**out, "loss": out["loss"] * math.nan} if step == 0 else out
    with pytest.raises(NonFiniteLossError, match="run the same command again") as err:
        train(tiny_config(tmp_path, "again", iterations=1), hooks=TrainHooks(on_losses=nan_at_0))
    assert "--resume" not in str(err.value)
    assert not (tmp_path / "again").exists()

    assert load_checkpoint(train(tiny_config(tmp_path, "again", iterations=1)) / "checkpoints" / "last.pt")["step"] == 1


def test_a_failure_after_a_checkpoint_keeps_the_run_and_names_the_resume(tmp_path):
    def fail_at_2(done, encoder, out):
        if done == 2: raise ValueError("the hook failed")
    with pytest.raises(ValueError, match="the hook failed") as err:
        train(tiny_config(tmp_path, "kept", iterations=3, image_every=0), hooks=TrainHooks(on_step_end=fail_at_2))
    run_dir = tmp_path / "kept"
    assert f"--resume {run_dir}" in str(err.value) and "\n" not in str(err.value)
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 2


def test_a_damaged_last_checkpoint_points_to_the_newest_intact_snapshot(tmp_path):
    import shutil
    run_dir = train(tiny_config(tmp_path, "cut", iterations=2, ckpt_every=1, image_every=0))
    ckpts = run_dir / "checkpoints"
    straight = load_checkpoint(ckpts / "step_2.pt")
    for name in ("last.pt", "step_2.pt"):  # cut short, as by a full disk
        (ckpts / name).write_bytes((ckpts / name).read_bytes()[:5000])
    with pytest.raises(ValueError) as err:
        train(resume_config(run_dir), resume=True)
    message = str(err.value)
    assert "\n" not in message and f"{ckpts / 'last.pt'}: cannot read checkpoint" in message
    assert f"cp {ckpts / 'step_1.pt'} {ckpts / 'last.pt'}, then --resume {run_dir}" in message
    shutil.copy(ckpts / "step_1.pt", ckpts / "last.pt")  # the fix the message gives
    train(resume_config(run_dir), resume=True)
    assert_same_state(straight, load_checkpoint(ckpts / "last.pt"))  # resuming from the snapshot is still exact
    for name in ("last.pt", "step_1.pt", "step_2.pt"): (ckpts / name).write_bytes(b"")
    with pytest.raises(ValueError, match="no intact checkpoints/step_N.pt"):
        train(resume_config(run_dir), resume=True)


def test_damaged_checkpoint_files_are_named_in_one_line(tmp_path):
    from dense_ulearn.checkpoints import best_validation_score
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    best.parent.mkdir(parents=True)
    best.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ValueError, match="best.pt: cannot read checkpoint") as err:
        best_validation_score(tmp_path / "run")
    assert "\n" not in str(err.value) and f"--resume {tmp_path / 'run'}" in str(err.value)
    with pytest.raises(ValueError, match="best.pt: cannot read checkpoint"):
        load_checkpoint(best)


def test_damaged_config_files_name_the_file_and_the_line(tmp_path):
    from dense_ulearn.config import read_config_file
    bad_yaml = tmp_path / "settings.yaml"
    bad_yaml.write_text("lr: 3e-4\nbetas: [0.5, 0.999\nbatch_size: 4\n")
    with pytest.raises(ValueError, match=r"settings.yaml: not valid YAML at line \d+, column \d+"):
        load_config("cpu-tiny", file=bad_yaml)
    bad_toml = tmp_path / "settings.toml"
    bad_toml.write_text("lr = 3e-4\ncrop = = 64\n")
    with pytest.raises(ValueError, match=r"settings.toml: not valid TOML: .*line 2, column"):
        read_config_file(bad_toml)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("config:\n  lr: 0.0001\n  crop: [64\n")  # a run record cut short
    with pytest.raises(ValueError, match=r"config.yaml: not valid YAML at line 4, column 1") as err:
        resume_config(run_dir)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("setting, message", [
    ("crop=-5", "crop = -5: must be a positive integer (--set crop=N)"),
    ("batch_size=0", "batch_size = 0: must be a positive integer"),
    ("frames_per_clip=1", "frames_per_clip = 1: must be an integer >= 2"),
    ("short_side=[96,120]", "short_side = [96, 120] is smaller than crop = 128"),
    ("loss.temperature=-1", "loss.temperature = -1.0: must be a positive number"),
    ("optimizer=adamw", 'optimizer = "adamw": must be one of adam, sgd'),
    ("workers=-2", "workers = -2: must be an integer >= 0 (--workers N or --set workers=N)"),
])
def test_settings_out_of_range_are_one_line_errors(setting, message):
    with pytest.raises(ValueError) as err:
        load_config("cpu-tiny", overrides=[setting])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_train_checks_the_settings_before_creating_the_run_folder(tmp_path):
    from dataclasses import replace
    cfg = replace(tiny_config(tmp_path, "negative"), iterations=-3)  # the Python API skips load_config's checks
    with pytest.raises(ValueError, match=r"iterations = -3: must be a positive integer or null \(--iterations N"):
        train(cfg)
    assert not (tmp_path / "negative").exists()
    with pytest.raises(ValueError, match=r"--set clips_per_video=N\) or lower batch_size \(--set batch_size=N\)"):
        train(tiny_config(tmp_path, "few", batch_size=8))  # 3 videos x 2 clips cannot fill a batch of 8
    assert not (tmp_path / "few").exists()


def test_a_damaged_frame_read_in_a_dataloader_worker_is_one_line(tmp_path, monkeypatch):
    import dense_ulearn.train as train_module
    from dense_ulearn.data import JPEG_EOI
    from dense_ulearn.synthetic import make_synthetic_davis
    videos = make_synthetic_davis(tmp_path / "videos", n_videos=3, n_frames=10, size=(40, 56), seed=0)
    make_loader = train_module.make_loader
    def damage_then_load(*args, **kwargs):  # the frames break after the data set was opened (checked): found in a worker
        for frame in videos.rglob("*.jpg"):
            data = frame.read_bytes()
            frame.write_bytes(data[:len(data) // 3] + JPEG_EOI)
        return make_loader(*args, **kwargs)
    monkeypatch.setattr(train_module, "make_loader", damage_then_load)
    with pytest.raises(ValueError) as err:
        train(tiny_config(tmp_path, "broken", iterations=1, workers=1, video_root=str(videos)))
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message, message
    assert message.startswith("training video 'synth-0") and "cannot decode frame" in message, message
    assert not (tmp_path / "broken").exists()
