"""The run folder of a training run (rank 0): config.json, log.jsonl, TensorBoard scalars and
the progress bar."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch


class RunLog:
    """Rank 0's run folder: config.json, log.jsonl, tensorboard scalars, the progress bar."""

    def __init__(
        self,
        output_dir: Path,
        run_config: dict,
        max_iters: int,
        start: int,
        tensorboard: bool,
        progress: bool,
    ):
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.json").write_text(json.dumps(run_config, indent=1))
        self.log_file = open(output_dir / "log.jsonl", "a", encoding="utf-8")
        self.writer = self.bar = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise RuntimeError(
                    "--tensorboard needs the tensorboard package: pip install tensorboard"
                ) from error

            self.writer = SummaryWriter(str(output_dir / "tensorboard"))
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=max_iters, initial=start, desc="training", unit="it")
        self.window_start, self.window_images = time.perf_counter(), 0

    def step(self, images: int) -> None:
        """One iteration of ``images`` images (the global batch) is done."""
        self.window_images += images
        if self.bar is not None:
            self.bar.update(1)

    def write(self, done: int, optimizer, criterion, grad_norm, terms) -> dict:
        """Log iteration ``done`` (``terms``: the global batch's loss terms) and return the record.

        images_per_s is over the iterations since the last record.
        """
        elapsed = time.perf_counter() - self.window_start
        record = {
            "iter": done,
            "lr": optimizer.param_groups[0]["lr"],
            "loss": criterion.total({k: torch.tensor(v) for k, v in terms.items()}).item(),
            "grad_norm": float(grad_norm),
            "images_per_s": self.window_images / max(elapsed, 1e-9),
            **{k: v for k, v in terms.items() if k.count("_") == 1},
        }
        self.log_file.write(json.dumps(record) + "\n")
        self.log_file.flush()
        if self.writer is not None:
            for key, value in record.items():
                self.writer.add_scalar(key, value, done)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.3f}")
        self.window_start, self.window_images = time.perf_counter(), 0
        return record

    def close(self) -> None:
        """Close log.jsonl, the tensorboard writer and the progress bar."""
        for handle in (self.log_file, self.writer, self.bar):
            if handle is not None:
                handle.close()
