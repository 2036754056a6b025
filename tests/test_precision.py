"""The precision choice: hardware rules, the measured auto choice, the int8 path's layers and
its agreement with fp32, and the bf16 trap's warning."""

import json

import pytest
import torch
from torch import nn

from conftest import run_main
from ovseg import precision as P
from ovseg.apps import bench, bench_matmul
from ovseg.apps.bench_agreement import fast_path_agreement


def hardware(**overrides):
    fields = {
        "device": "cpu",
        "name": "Test CPU",
        "isa": "AVX2",
        "native_bf16": False,
        "native_fp16": False,
        "int8": True,
    }
    fields.update(overrides)
    return P.Hardware(**fields)


@pytest.fixture
def fake_cpu(monkeypatch):
    """Pretend hardware and probe timings: (hardware overrides, {precision: seconds})."""

    def install(timings, **overrides):
        monkeypatch.setattr(P, "detect_hardware", lambda device: hardware(**overrides))
        monkeypatch.setattr(
            P, "cached_probe", lambda hw, shape, precisions: {p: timings[p] for p in precisions}
        )

    return install


def test_unknown_precision_names_the_choices():
    with pytest.raises(ValueError, match="choose from auto, fp32, bf16, fp16, int8"):
        P.choose_precision("fp64", "cpu", probe_shape=(1, 1, 1))


def test_auto_takes_the_measured_fastest_native_path(fake_cpu):
    fake_cpu({"fp32": 1.0, "int8": 0.4, "bf16": 0.5}, native_bf16=True)
    choice = P.choose_precision("auto", "cpu", probe_shape=(8, 4, 16))
    assert choice.precision == "int8" and "2.50x" in choice.reason


@pytest.mark.parametrize("requested", ["auto", "int8"])
def test_int8_runs_its_other_layers_in_bf16_only_where_native_and_faster(fake_cpu, requested):
    fake_cpu({"fp32": 1.0, "int8": 0.4, "bf16": 0.5}, native_bf16=True)
    choice = P.choose_precision(requested, "cpu", probe_shape=(8, 4, 16))
    assert choice.precision == "int8" and choice.others == "bf16"
    assert choice.autocast_dtype == torch.bfloat16 and "other layers in bf16" in choice.reason
    fake_cpu({"fp32": 1.0, "int8": 0.4, "bf16": 0.95}, native_bf16=True)  # not clearly faster
    choice = P.choose_precision(requested, "cpu", probe_shape=(8, 4, 16))
    assert choice.others == "fp32" and choice.autocast_dtype is None
    fake_cpu({"fp32": 1.0, "int8": 0.4, "bf16": 0.2})  # fast on the probe, but not native
    assert P.choose_precision(requested, "cpu", probe_shape=(8, 4, 16)).autocast_dtype is None


def test_auto_never_takes_a_path_that_is_not_clearly_faster(fake_cpu):
    fake_cpu({"fp32": 1.0, "int8": 0.95, "bf16": 0.2})  # bf16 not native: never a candidate
    choice = P.choose_precision("auto", "cpu", probe_shape=(8, 4, 16))
    assert choice.precision == "fp32"
    assert "bf16" not in choice.probe


def test_auto_without_any_fast_path_is_fp32(fake_cpu):
    fake_cpu({"fp32": 1.0}, int8=False)
    assert P.choose_precision("auto", "cpu", probe_shape=(8, 4, 16)).precision == "fp32"


def test_bf16_without_native_support_warns_with_its_measured_cost(fake_cpu):
    fake_cpu({"fp32": 1.0, "bf16": 7.0})
    choice = P.choose_precision("bf16", "cpu", probe_shape=(8, 4, 16))
    assert choice.precision == "bf16"  # asked for: honoured, but said
    assert "not native" in choice.warning and "7.0x the fp32 time" in choice.warning


def test_native_bf16_that_measures_slower_still_warns(fake_cpu):
    """Flags can claim bf16 while the kernels do not use it (a limited oneDNN, a VM)."""
    fake_cpu({"fp32": 1.0, "bf16": 4.0}, native_bf16=True)
    choice = P.choose_precision("bf16", "cpu", probe_shape=(8, 4, 16))
    assert "4.0x the fp32 time" in choice.warning
    fake_cpu({"fp32": 1.0, "bf16": 0.5}, native_bf16=True)
    assert P.choose_precision("bf16", "cpu", probe_shape=(8, 4, 16)).warning is None


def test_gpu_auto_is_bf16_and_int8_is_refused(monkeypatch):
    gpu = hardware(device="cuda:0", name="GPU", isa="sm_90", native_bf16=True, int8=False)
    monkeypatch.setattr(P, "detect_hardware", lambda device: gpu)
    assert P.choose_precision("auto", "cuda", probe_shape=(1, 1, 1)).precision == "bf16"
    with pytest.raises(ValueError, match="CPU only"):
        P.choose_precision("int8", "cuda", probe_shape=(1, 1, 1))


def test_probe_is_measured_once_and_cached(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(
        P, "stable_probe", lambda shape, precisions: calls.append(precisions) or ({"fp32": 1.0}, 3)
    )
    hw = hardware()
    assert P.cached_probe(hw, (4, 8, 16), ["fp32"]) == {"fp32": 1.0}
    assert P.cached_probe(hw, (4, 8, 16), ["fp32"]) == {"fp32": 1.0}
    assert calls == [["fp32"]]
    cached = json.loads((tmp_path / "cache" / "precision_probe.json").read_text())
    assert list(cached.values()) == [{"seconds": {"fp32": 1.0}, "rounds": 3, "threads": 1}]


def test_real_probe_times_every_precision_asked():
    seconds = P.probe_speeds((16, 8, 32), ["fp32", "int8", "bf16"], repeats=1)
    assert set(seconds) == {"fp32", "int8", "bf16"} and all(s > 0 for s in seconds.values())


def test_pointwise_convolution_as_linear_is_the_same_layer():
    conv = nn.Conv2d(6, 10, kernel_size=1)
    x = torch.randn(2, 6, 5, 7)
    torch.testing.assert_close(P.PointwiseAsLinear(conv)(x), conv(x))


def is_quantized(module):
    """An int8 layer, as quantize_int8 leaves it: wrapped to take any float input."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    return isinstance(module, P.Float32Input) and isinstance(module.layer, DynamicQuantizedLinear)


def test_int8_quantizes_every_backbone_mlp_layer(parity_predictor):
    """The official tiny model's ConvNeXt (a conv_mlp one): both MLP layers of every block;
    the pixel decoder's projections and feed-forward layers, not its sampling offsets."""
    import copy

    model = copy.deepcopy(parity_predictor.model)
    trunk = model.backbone.clip.visual.trunk
    blocks = sum(len(stage.blocks) for stage in trunk.stages)
    probe_shape = P.mlp_probe_shape(model)
    P.quantize_int8(model)
    quantized = [m for m in trunk.stages.modules() if is_quantized(m)]
    assert len(quantized) == 2 * blocks
    for layer in model.pixel_decoder.transformer.encoder.layers:
        modules = dict(layer.named_modules())
        assert is_quantized(modules["linear1"]) and is_quantized(modules["self_attn.value_proj"])
        assert type(modules["self_attn.sampling_offsets"]) is nn.Linear
    shapes = {(m.layer.in_features, m.layer.out_features) for m in quantized}
    assert probe_shape[1:] in shapes
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 inputs reach the int8 layers
        x = torch.randn(3, quantized[0].layer.in_features).bfloat16()
        assert quantized[0](x).dtype == torch.float32


@pytest.mark.parametrize("fast", ["int8", "bf16", "int8 in small feed-forward blocks"])
def test_fast_paths_agree_with_fp32_on_the_trained_tiny_model(fast, monkeypatch):
    if fast.startswith("int8 in"):  # each block's activations quantized on their own range
        from ovseg.modeling.pixel_decoder import DeformableEncoderLayer

        monkeypatch.setattr(DeformableEncoderLayer, "feed_forward_tokens", 48)
        fast = "int8"
    """The fast path's agreement goal (>= 99% semantic argmax, the same panoptic segment
    counts) on the shipped synthetic_tiny's val scenes, whose MLPs are trained (not hidden
    behind 1e-6 layer scales as in a random model)."""
    result = fast_path_agreement(fast)
    case = next(c for c in result["cases"] if c["name"] == "synthetic_tiny")
    assert case["images"] == 3
    assert case["semantic_agreement"] >= 0.99
    assert case["segments_fast"] == case["segments_fp32"] and case["same_segment_counts"] == 3
    # The official tiny parity model too (random weights: a near-tie there moved a whole
    # segment when the pixel decoder ran all-bf16). Where bf16 is emulated (no AVX512-BF16,
    # AMX or GPU) it is never a fast path: auto does not take it and asking for it warns;
    # there the emulated rounding flips that near-tie (81% on an AVX2-only Zen 3), so the
    # parity model holds bf16 to the goal only where bf16 is native.
    if fast == "bf16" and not P.detect_hardware().native_bf16:
        return
    parity = next(c for c in result["cases"] if c["name"] == "parity_tiny")
    assert parity["semantic_agreement"] >= 0.99
    assert parity["segments_fast"] == parity["segments_fp32"]


def test_matmul_peak_probe_reports_a_rate():
    result = bench_matmul.peak_matmul_gflops("int8", sizes=(64, 128), repeats=1)
    assert result["gflops"] > 0 and result["size"] in (64, 128)


def test_flop_count_includes_cpu_attention():
    """torch counts only the GPU attention kernels; the decoder's attention on a CPU is not 0."""
    import torch.nn.functional as F

    query, keys = torch.randn(2, 8, 25, 32), torch.randn(2, 8, 86, 32)
    with torch.no_grad(), bench.count_flops() as counter:
        F.scaled_dot_product_attention(query, keys, keys, attn_mask=torch.zeros(2, 1, 25, 86))
    assert counter.get_total_flops() == 2 * (2 * 8 * 25 * 86 * 32) * 2
    summed = torch.zeros(5, 3)
    with torch.no_grad(), bench.count_flops() as counter:
        summed.addmm_(torch.ones(5, 7), torch.ones(7, 3))  # mask pooling's bands
    assert counter.get_total_flops() == 2 * 5 * 7 * 3


def test_each_stage_is_held_to_the_peak_of_its_own_precision():
    int8 = {"precision": "int8", "others": "bf16"}
    assert bench.stage_precision(int8, "backbone") == "int8"
    assert bench.stage_precision(int8, "pixel_decoder") == "int8"
    assert bench.stage_precision(int8, "transformer_decoder") == "bf16"
    assert bench.stage_precision({"precision": "int8"}, "transformer_decoder") == "fp32"
    assert bench.stage_precision({"precision": "bf16"}, "pixel_decoder") == "fp32"
    assert bench.stage_precision({"precision": "bf16"}, "backbone") == "bf16"
    report = {
        "stage_gflop": {"backbone": 10.0, "transformer_decoder": 2.0},
        "matmul_peak": [
            {"precision": "int8", "gflops": 100.0},
            {"precision": "bf16", "gflops": 40.0},
        ],
        "runs": {
            "auto": {
                "precision": int8,
                "seconds_median": {"backbone": 0.5, "transformer_decoder": 0.1},
            }
        },
    }
    rates = bench.stage_rates(report)["auto"]
    assert rates["backbone"] == {"gflops": 20.0, "precision": "int8", "fraction_of_peak": 0.2}
    assert rates["transformer_decoder"]["fraction_of_peak"] == 0.5  # 20 of bf16's 40


def test_bench_reports_stages_per_precision(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["--config", "fcclip_tiny_test", "--short-side", "64", "--repeats", "1"]
    args += ["--precisions", "fp32,int8", "--no-agreement", "--text", "coco", "--json", str(out)]
    assert run_main(bench.main, args, capsys)[0] == 0
    report = json.loads(out.read_text())
    assert list(report["runs"]) == ["fp32", "int8"]
    for run in report["runs"].values():
        assert run["seconds_median"]["backbone"] > 0
    assert report["backbone_gflop"] > 0 and report["matmul_peak"][0]["gflops"] > 0
    assert set(report["stage_gflop"]) == {"backbone", "pixel_decoder", "transformer_decoder"}
    assert all(gflop > 0 for gflop in report["stage_gflop"].values())
    rates = report["stage_rates"]["fp32"]["pixel_decoder"]
    seconds = report["runs"]["fp32"]["seconds_median"]["pixel_decoder"]
    assert rates["gflops"] == report["stage_gflop"]["pixel_decoder"] / seconds
    assert 0 < rates["fraction_of_peak"]
    text = report["text"]["coco"]
    assert text["prompts"] > 133 and text["official_per_prompt_s"] > 0


def test_predict_says_the_precision_it_runs(tmp_path, capsys):
    from PIL import Image

    from ovseg.apps.predict import main

    image = tmp_path / "a.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    args = [image, "--classes", "cat, sky", "--model", "fcclip_tiny_parity", "--short-side", "64"]
    code, _, err = run_main(
        main, [*args, "--precision", "int8", "--output", tmp_path / "o"], capsys
    )
    assert code == 0 and "precision int8 (asked for" in err
    record = json.loads(next((tmp_path / "o").glob("*.json")).read_text())
    assert record["settings"]["precision"] == "int8"
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in [*args, "--precision", "int4"]])
    assert exit_info.value.code == 2 and "invalid choice: 'int4'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "main, args, message",
    [
        (bench.main, ["--precisions", "fp32,fp64"], "unknown precision 'fp64'"),
        (bench_matmul.main, ["--precisions", "int4"], "unknown precision 'int4'"),
        (bench_matmul.main, ["--precisions", "auto"], "auto is not one"),
    ],
)
def test_benchmarks_refuse_unknown_precisions(main, args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_bench_says_a_missing_image_in_one_line(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["--config", "fcclip_tiny_test", "--image", tmp_path / "none.jpg", "--json", out]
    code, _, err = run_main(bench.main, args, capsys)
    assert code == 2 and err.startswith("error:") and "none.jpg" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
