"""--precision auto is one decision per machine and model: not one per thread count, per
process or per moment's load (int8 at 2 threads and bf16 at 1 once gave torchrun and a plain run
different segments). The decision is recorded in every output JSON."""

import json

import pytest
import torch

from conftest import run_main
from ovseg import precision as P


@pytest.fixture
def int8_cpu(monkeypatch):
    """A CPU whose only fast path is int8 (this torch's engine); the thread count restored."""
    cpu = P.Hardware("cpu", "Test CPU", "AVX2", native_bf16=False, native_fp16=False, int8=True)
    monkeypatch.setattr(P, "detect_hardware", lambda device: cpu)
    threads = torch.get_num_threads()
    yield cpu
    torch.set_num_threads(threads)


def test_the_choice_does_not_change_with_the_thread_count(int8_cpu, tmp_path):
    torch.set_num_threads(2)
    two = P.choose_precision("auto", "cpu", probe_shape=(64, 16, 64))
    torch.set_num_threads(1)
    one = P.choose_precision("auto", "cpu", probe_shape=(64, 16, 64))
    assert (one.precision, one.probe) == (two.precision, two.probe)
    cache = json.loads((tmp_path / "cache" / "precision_probe.json").read_text())
    assert len(cache) == 1  # measured once, for every thread count
    assert torch.get_num_threads() == 1  # the probe's one thread is given back


def scripted_rounds(monkeypatch, rounds: list[dict]) -> list[int]:
    """The probe's rounds return ``rounds`` in turn (the last one from then on); returns the
    thread counts the rounds ran at."""
    threads = []

    def fake_round(x, nets, calls):
        threads.append(torch.get_num_threads())
        return rounds[min(len(threads), len(rounds)) - 1]

    monkeypatch.setattr(P, "_probe_nets", lambda shape, precisions, min_seconds: (None, {}, 1))
    monkeypatch.setattr(P, "_probe_round", fake_round)
    return threads


def test_a_round_slowed_by_load_does_not_decide(int8_cpu, monkeypatch):
    """fp32's first round ran while the machine was busy (int8 looked 5.6x faster); the probe
    goes on until its answer holds for three rounds, on one thread."""
    torch.set_num_threads(2)
    threads = scripted_rounds(
        monkeypatch,
        [{"fp32": 5.0, "int8": 0.9}, {"fp32": 1.0, "int8": 0.95}, {"fp32": 1.02, "int8": 0.97}],
    )
    choice = P.choose_precision("auto", "cpu", probe_shape=(8, 4, 16))
    assert choice.precision == "fp32" and "1.11x" in choice.reason
    assert len(threads) == 4 and set(threads) == {1}


def test_a_probe_that_never_settles_stops(monkeypatch):
    """Each round a new fastest time for fp32 and int8 in turn: the answer flips every round."""
    count = []

    def flipping(x, nets, calls):
        count.append(1)
        fast = 4.0 ** -len(count)
        return {"fp32": 10.0, "int8": fast} if len(count) % 2 else {"fp32": fast, "int8": 10.0}

    monkeypatch.setattr(P, "_probe_nets", lambda shape, precisions, min_seconds: (None, {}, 1))
    monkeypatch.setattr(P, "_probe_round", flipping)
    seconds, rounds = P.stable_probe((8, 4, 16), ["fp32", "int8"], max_rounds=7)
    assert rounds == 7 and seconds == {"fp32": 4.0**-6, "int8": 4.0**-7}


def test_every_output_json_records_the_precision_in_use(image, tmp_path, capsys):
    from ovseg.apps import predict

    code, _, err = run_main(
        predict.main,
        [
            image,
            "--model",
            "synthetic_tiny",
            "--classes",
            "star",
            "--output",
            tmp_path / "out",
            "--precision",
            "fp32",
        ],
        capsys,
    )
    assert code == 0, err
    record = json.loads((tmp_path / "out" / "photo.json").read_text())
    assert record["precision"]["requested"] == "fp32" and record["precision"]["precision"] == "fp32"
    assert record["precision"]["reason"] and record["precision"]["hardware"]
