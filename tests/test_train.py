"""The training loop on generated COCO-panoptic data: loss falls, resume equals an
uninterrupted run, 2-process torchrun equals 1 process, bad checkpoints are refused."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ovseg.checkpoint import WeightsError
from ovseg.config import load_config
from ovseg.data import LargeScaleJitter, PanopticDataset
from ovseg.synthetic.scenes import write_synthetic_panoptic
from ovseg.train.loop import TrainConfig, train
from ovseg.train.state import latest_checkpoint, load_training_state

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    # Plain things: the loop's tests were calibrated on them (the loss bound below included).
    json_path = write_synthetic_panoptic(root, 12, size=(64, 80), seed=0, patterns=False)
    split = Path(json_path).parent
    return {"images": split / "images", "json": json_path, "png": split / "panoptic"}


def dataset_of(data):
    return PanopticDataset(data["images"], data["json"], data["png"])


def tiny_cfg(**overrides):
    values = dict(
        max_iters=6,
        batch_size=2,
        lr=1e-3,
        warmup_iters=2,
        warmup_factor=0.1,
        clip_grad=1.0,
        crop_size=64,
        num_points=128,
        checkpoint_every=3,
        log_every=1,
        num_workers=0,
        seed=3,
    )
    values.update(overrides)
    return TrainConfig(**values)


def run(data, out, cfg, **kwargs):
    return train(
        load_config("fcclip_tiny_test"),
        cfg,
        dataset_of(data),
        out,
        transform=LargeScaleJitter(crop_size=cfg.crop_size),
        progress=False,
        **kwargs,
    )


def trained_weights(out):
    return load_training_state(latest_checkpoint(Path(out) / "checkpoints"))["model"]


def test_loss_decreases_over_100_iterations(synthetic, tmp_path):
    cfg = tiny_cfg(max_iters=100, checkpoint_every=100, lr=2e-3, min_scale=0.8, max_scale=1.2)
    run(synthetic, tmp_path, cfg)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "log.jsonl").open()]
    assert len(losses) == 100
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.7 * first, (first, last)
    assert (tmp_path / "model_final.safetensors").is_file()
    saved = trained_weights(tmp_path)
    assert saved and not any(k.startswith("backbone.clip.") for k in saved)  # CLIP never saved


def test_resume_equals_uninterrupted(synthetic, tmp_path):
    run(synthetic, tmp_path / "straight", tiny_cfg())
    run(synthetic, tmp_path / "resumed", tiny_cfg(), stop_at=3)
    assert latest_checkpoint(tmp_path / "resumed" / "checkpoints").name == "iter_00000003.pt"
    run(synthetic, tmp_path / "resumed", tiny_cfg(), resume="auto")
    straight = trained_weights(tmp_path / "straight")
    resumed = trained_weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    # And a run that did not train at all differs, so the comparison can fail.
    run(synthetic, tmp_path / "short", tiny_cfg(max_iters=3))
    short = trained_weights(tmp_path / "short")
    assert any(not torch.equal(short[k], straight[k]) for k in straight)


def test_a_folder_that_holds_a_run_is_not_started_over(synthetic, tmp_path, capsys):
    """Without --resume, training into a run folder used to start over: log.jsonl got two runs
    interleaved and model_final.safetensors was replaced. It is refused with one line."""
    run(synthetic, tmp_path, tiny_cfg(max_iters=3))
    log_before = (tmp_path / "log.jsonl").read_bytes()
    final_before = (tmp_path / "model_final.safetensors").read_bytes()
    with pytest.raises(ValueError, match="already holds a training run .* --resume"):
        run(synthetic, tmp_path, tiny_cfg(max_iters=3))
    assert (tmp_path / "log.jsonl").read_bytes() == log_before
    assert (tmp_path / "model_final.safetensors").read_bytes() == final_before
    from ovseg.apps.train import main

    argv = ["--config", "fcclip_tiny_test", "--images", str(synthetic["images"])]
    argv += ["--panoptic-json", str(synthetic["json"]), "--panoptic-dir", str(synthetic["png"])]
    capsys.readouterr()  # the first run's warnings
    assert main(argv + ["--output", str(tmp_path), "--max-iters", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--resume" in err and "\n" not in err


def test_bad_checkpoints_are_refused(synthetic, tmp_path):
    run(synthetic, tmp_path, tiny_cfg(max_iters=3))
    path = latest_checkpoint(tmp_path / "checkpoints")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        run(synthetic, tmp_path / "again", tiny_cfg(), resume=str(truncated))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 100)
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        load_training_state(garbage)
    other = train(
        load_config("fcclip_tiny_parity"),
        tiny_cfg(max_iters=1),
        dataset_of(synthetic),
        tmp_path / "other",
        transform=LargeScaleJitter(crop_size=64),
        progress=False,
    )
    assert other
    with pytest.raises(WeightsError, match="another architecture"):
        run(
            synthetic,
            tmp_path / "mismatch",
            tiny_cfg(),
            resume=str(latest_checkpoint(tmp_path / "other" / "checkpoints")),
        )


def cli_data_args(synthetic):
    """tools/train.py arguments for the tiny model on the generated data, small batches."""
    return [
        "--config",
        "fcclip_tiny_test",
        "--images",
        synthetic["images"],
        "--panoptic-json",
        synthetic["json"],
        "--panoptic-dir",
        synthetic["png"],
        "--batch-size",
        "2",
        "--crop-size",
        "64",
        "--num-points",
        "128",
        "--num-workers",
        "0",
    ]


# Two processes on this machine, on a free port (--standalone), so runs never collide.
TORCHRUN_TWO = [
    sys.executable,
    "-m",
    "torch.distributed.run",
    "--standalone",
    "--nproc_per_node",
    "2",
]
# Subprocesses run this checkout, one thread each (2 processes on the 2 cores).
SUBPROCESS_ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def test_two_process_torchrun_equals_one_process(synthetic, tmp_path):
    common = [
        *cli_data_args(synthetic),
        "--max-iters",
        "3",
        "--lr",
        "1e-3",
        "--clip-grad",
        "1.0",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--no-progress",
    ]
    single = [
        sys.executable,
        str(ROOT / "tools" / "train.py"),
        "--output",
        tmp_path / "one",
        *common,
    ]
    double = [
        *TORCHRUN_TWO,
        str(ROOT / "tools" / "train.py"),
        "--output",
        tmp_path / "two",
        *common,
    ]
    for command in (single, double):
        done = subprocess.run(
            [str(c) for c in command],
            env=SUBPROCESS_ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = trained_weights(tmp_path / "one"), trained_weights(tmp_path / "two")
    assert json.loads((tmp_path / "two" / "config.json").read_text())["world_size"] == 2
    # Same samples, augmentation and loss normalisation: the global-batch losses agree.
    logs = [
        [json.loads(line) for line in (tmp_path / run / "log.jsonl").open()]
        for run in ("one", "two")
    ]
    for single_record, double_record in zip(*logs, strict=True):
        assert double_record["loss"] == pytest.approx(single_record["loss"], rel=1e-5)
    # Synchronised gradients: parameters agree up to float summation order. Attention key
    # biases have an exactly-zero gradient, whose round-off Adam scales up to steps of ~lr:
    # those thirds of in_proj_bias are left out.
    for key in one:
        a, b = one[key], two[key]
        if key.endswith("in_proj_bias"):
            third = a.shape[0] // 3
            a, b = torch.cat([a[:third], a[2 * third :]]), torch.cat([b[:third], b[2 * third :]])
        difference = float((a - b).abs().max())
        assert difference < 2e-5, (key, difference)


def test_gradient_accumulation_equals_one_batch(synthetic, tmp_path):
    run(synthetic, tmp_path / "whole", tiny_cfg(max_iters=2, batch_size=2, accum_steps=1))
    run(synthetic, tmp_path / "accumulated", tiny_cfg(max_iters=2, batch_size=2, accum_steps=2))
    logs = [
        [json.loads(line) for line in (tmp_path / name / "log.jsonl").open()]
        for name in ("whole", "accumulated")
    ]
    for whole, accumulated in zip(*logs, strict=True):
        assert accumulated["loss"] == pytest.approx(whole["loss"], rel=1e-5)
        assert accumulated["grad_norm"] == pytest.approx(whole["grad_norm"], rel=1e-4)


def test_sigkill_leaves_a_loadable_checkpoint(synthetic, tmp_path):
    import signal
    import time

    out = tmp_path / "killed"
    command = [
        sys.executable,
        str(ROOT / "tools" / "train.py"),
        *cli_data_args(synthetic),
        "--max-iters",
        "1000",
        "--checkpoint-every",
        "1",
        "--keep-last",
        "2",
        "--output",
        out,
        "--no-progress",
    ]
    process = subprocess.Popen(
        [str(c) for c in command],
        env=SUBPROCESS_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = sorted((out / "checkpoints").glob("iter_*.pt")) if out.exists() else []
            if found and int(found[-1].stem.split("_")[1]) >= 5:
                break
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)  # mid-iteration or mid-save, whatever comes
    finally:
        process.wait()
    latest = latest_checkpoint(out / "checkpoints")
    assert latest is not None and len(list((out / "checkpoints").glob("iter_*.pt"))) <= 2
    state = load_training_state(latest)
    assert state["iteration"] >= 5
    record = run(synthetic, out, tiny_cfg(max_iters=state["iteration"] + 2), resume="auto")
    assert record["iter"] == state["iteration"] + 2


def test_boolean_options_refuse_what_is_not_a_boolean(capsys):
    """--ignore-void ture must not silently train with it off."""
    from ovseg.apps.train import build_parser

    parser = build_parser()
    base = ["--output", "run", "--images", "i", "--panoptic-json", "p", "--panoptic-dir", "d"]
    assert parser.parse_args(base + ["--ignore-void", "true"]).ignore_void is True
    assert parser.parse_args(base + ["--ignore-void", "No"]).ignore_void is False
    assert parser.parse_args(base).ignore_void is False
    with pytest.raises(SystemExit) as error:
        parser.parse_args(base + ["--ignore-void", "ture"])
    assert error.value.code == 2
    assert "'ture' is not a boolean: write true or false" in capsys.readouterr().err


LEAVE_GROUP = """
import os, sys, torch
from torch.nn.parallel import DistributedDataParallel
from ovseg.distributed import all_reduce_mean, cleanup, init_distributed

def threads():
    return len(os.listdir("/proc/self/task"))

before = threads()
info = init_distributed("cpu")

def step():
    net = DistributedDataParallel(torch.nn.Linear(2, 2))
    net(torch.ones(1, 2)).sum().backward()
    all_reduce_mean({"loss": 1.0}, info)

step()
cleanup(info)
with open(os.path.join(sys.argv[1], f"rank{info.rank}.txt"), "w") as file:
    file.write(f"{before} {threads()}")
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_leaving_the_group_stops_gloo_threads(tmp_path):
    # Gloo threads alive at interpreter exit can drop a finished collective's tensors without
    # the GIL and abort the process (1 run in ~30 under load): cleanup must really stop them,
    # which takes the group's last reference (DDP collected, torch.distributed.nn imported early).
    script = tmp_path / "leave_group.py"
    script.write_text(LEAVE_GROUP)
    command = [
        *TORCHRUN_TWO,
        str(script),
        str(tmp_path),
    ]
    done = subprocess.run(command, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        before, after = (tmp_path / f"rank{rank}.txt").read_text().split()
        assert after == before, f"{int(after) - int(before)} threads outlive the process group"


def test_own_data_offline_end_to_end(tmp_path, capsys, monkeypatch):
    """The README's offline path: write data, train from the shipped synthetic_tiny (its CLIP
    in the file), predict with the result. The default config's CLIP tag used to retry a
    download for a minute; a model trained from a weights file used to leave its CLIP out of
    model_final unless --save-clip true was given, and predict failed naming a Python
    parameter."""
    from ovseg.apps.predict import main as predict_main
    from ovseg.apps.synthetic_world import main as world_main
    from ovseg.apps.train import main as train_main
    from ovseg.assets import ASSETS_DIR

    data = tmp_path / "data"
    assert world_main(["--out", str(data), "--data-only", "4"]) == 0
    split = data / "train"
    paths = ["--images", split / "images", "--panoptic-json", split / "panoptic.json"]
    paths += ["--panoptic-dir", split / "panoptic"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert train_main([str(a) for a in paths + ["--output", tmp_path / "real"]]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot get the CLIP weights" in err and "--init-weights" in err and "\n" not in err
    shipped = ASSETS_DIR / "synthetic_tiny" / "synthetic_tiny.safetensors"
    run_dir = tmp_path / "mine"
    args = ["--config", "synthetic_tiny", "--init-weights", shipped, "--output", run_dir]
    args += ["--max-iters", "2", "--batch-size", "2", "--crop-size", "64", "--num-points", "64"]
    args += ["--num-workers", "0", "--no-progress", "--checkpoint-every", "2"]
    assert train_main([str(a) for a in paths + args]) == 0
    out = tmp_path / "out"
    scene = data / "val" / "images" / "val_00000.png"
    predict_args = [scene, "--weights", run_dir / "model_final.safetensors"]
    predict_args += ["--config", "synthetic_tiny", "--vocab", "synthetic_world", "--output", out]
    assert predict_main([str(a) for a in predict_args]) == 0, capsys.readouterr().err
    assert (out / "val_00000.json").is_file()


def test_void_aware_no_object_reaches_the_losses_with_the_padding_mask(
    synthetic, tmp_path, monkeypatch
):
    """--void-aware-no-object: the criterion looks for queries on void, and each target
    carries the transform's ``valid`` mask so that padding is not taken for void."""
    from ovseg.train.losses import SetCriterion

    calls = []
    original = SetCriterion.void_queries

    def spy(self, pred_masks, targets, matches):
        calls.append([target.get("valid") for target in targets])
        return original(self, pred_masks, targets, matches)

    monkeypatch.setattr(SetCriterion, "void_queries", spy)
    run(synthetic, tmp_path / "off", tiny_cfg(max_iters=1))
    assert not calls
    run(synthetic, tmp_path / "on", tiny_cfg(max_iters=1, void_aware_no_object=True))
    assert calls
    assert all(v is not None and v.dtype == torch.bool for call in calls for v in call)
