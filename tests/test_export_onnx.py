"""ONNX export with the vocabulary as an input: one exported synthetic_tiny, run by ONNX
Runtime, gives PyTorch's logits and the same label maps for vocabularies of different sizes,
at an image size it was not exported at."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="pip install 'ovseg[export]'")
pytest.importorskip("onnxscript", reason="pip install 'ovseg[export]'")

from conftest import run_main  # noqa: E402
from ovseg.apps.export import main as export_main  # noqa: E402
from ovseg.export import ExportError, OnnxPredictor, read_export  # noqa: E402
from ovseg.export.onnx_export import check_exportable  # noqa: E402
from ovseg.predictor import OVSegPredictor  # noqa: E402

VOCABULARIES = {
    "shipped, 19 classes": "synthetic_world",
    "4 classes, one with a synonym": ["triangle/trigon", "grass", "ring", "sand"],
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``ovseg export --model synthetic_tiny`` once: (folder, PyTorch predictor)."""
    root = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OVSEG_CACHE", str(root / "cache"))
        assert export_main(["--model", "synthetic_tiny", "--out", str(root / "tiny")]) == 0
        predictor = OVSegPredictor.from_pretrained("synthetic_tiny", use_disk_text_cache=False)
    return root / "tiny", predictor


@pytest.fixture
def scene():
    """A shipped synthetic val scene (128 x 160: not the size the export was traced at)."""
    import ovseg
    from ovseg.preprocess import load_image

    examples = Path(ovseg.__file__).parent / "assets" / "examples"
    return load_image(examples / "synthetic_val_00000.png")


def test_the_export_folder_holds_three_graphs_and_a_passed_check(exported):
    folder, _ = exported
    settings = read_export(folder)
    assert settings["graphs"] == ["image_encoder", "classifier", "text_encoder"]
    assert all((folder / f"{g}.onnx").is_file() for g in settings["graphs"])
    check = settings["check"]
    assert check["image_size"] != [256, 320]  # checked at another size than exported
    assert max(v for k, v in check.items() if k != "image_size") < 1e-3
    assert settings["opset"] >= 17 and settings["inference"]["size_divisibility"] == 32
    assert not list(folder.parent.glob("tiny.partial-*"))


def test_the_image_encoder_graph_has_no_loop(exported):
    # deformable attention's embedding_bag exported as a Loop over every (query, head) bag,
    # which made ONNX Runtime 4x slower than PyTorch; the export path gathers instead
    import onnx

    folder, _ = exported
    graph = onnx.load(str(folder / "image_encoder.onnx"), load_external_data=False).graph
    kinds = {node.op_type for node in graph.node}
    assert "Loop" not in kinds and "SequenceInsert" not in kinds


@pytest.mark.parametrize("vocabulary", VOCABULARIES.values(), ids=VOCABULARIES.keys())
def test_onnx_runtime_equals_pytorch_for_any_vocabulary(exported, scene, vocabulary):
    folder, torch_predictor = exported
    onnx_predictor = OnnxPredictor(folder, threads=1)
    expected = torch_predictor.predict(scene, vocabulary=vocabulary)
    result = onnx_predictor.predict(scene, vocabulary=vocabulary)
    assert result["vocabulary"] == expected["vocabulary"]
    assert torch.allclose(result["class_logits"], expected["class_logits"], atol=1e-4, rtol=0)
    assert torch.allclose(result["mask_logits"], expected["mask_logits"], atol=1e-4, rtol=0)
    assert torch.equal(result["panoptic_seg"], expected["panoptic_seg"])
    assert torch.equal(result["sem_seg"].argmax(0), expected["sem_seg"].argmax(0))
    assert torch.equal(result["instances"]["labels"], expected["instances"]["labels"])
    assert torch.equal(result["instances"]["masks"], expected["instances"]["masks"])
    got = [(s["id"], s["category_id"], s["isthing"]) for s in result["segments_info"]]
    assert got == [(s["id"], s["category_id"], s["isthing"]) for s in expected["segments_info"]]
    scores = [s["score"] for s in result["segments_info"]]
    assert np.allclose(scores, [s["score"] for s in expected["segments_info"]], atol=1e-5)
    assert len(got) > 0  # the scene has objects: the comparison is not of two empty outputs


def test_onnx_runtime_takes_other_ensemble_weights_as_pytorch_does(exported, scene):
    """``segment(..., alpha=, beta=)``: the graph's in- and out-of-vocabulary logits
    re-ensembled with other weights, as the PyTorch model's ``classify`` does."""
    folder, torch_predictor = exported
    onnx_predictor = OnnxPredictor(folder, threads=1)
    for predictor in (torch_predictor, onnx_predictor):
        predictor.set_vocabulary("synthetic_world")
    torch_features, onnx_features = torch_predictor.encode(scene), onnx_predictor.encode(scene)
    results = {}
    for alpha, beta in ((0.0, 0.0), (1.0, 1.0), (1.0, None)):
        expected = torch_predictor.segment(torch_features, alpha=alpha, beta=beta)
        result = onnx_predictor.segment(onnx_features, alpha=alpha, beta=beta)
        assert torch.allclose(result["class_logits"], expected["class_logits"], atol=1e-4, rtol=0)
        results[alpha, beta] = result["class_logits"]
    default = onnx_predictor.segment(onnx_features)["class_logits"]
    assert not torch.allclose(default, results[1.0, 1.0], atol=1e-3)  # the weights count
    # with the model's own weights given, the graph's own ensemble, to rounding
    weights = read_export(folder)["inference"]
    same = onnx_predictor.segment(
        onnx_features,
        alpha=weights["out_vocab_weight_seen"],
        beta=weights["out_vocab_weight_unseen"],
    )
    assert torch.allclose(same["class_logits"], default, atol=1e-5, rtol=0)


def test_empty_query_masks_pool_to_finite_embeddings(exported):
    """Random pixels leave some query masks empty; their pooled CLIP embedding must stay
    finite (onnxscript's optimizer would fold FC-CLIP's area + 1e-8 into a 0 / 0)."""
    folder, torch_predictor = exported
    image = np.random.default_rng(1).integers(0, 255, (96, 160, 3), dtype=np.uint8)
    features = OnnxPredictor(folder, threads=1).encode(image)
    reference = torch_predictor.encode(image)
    assert torch.isfinite(features.clip_embeds).all()
    assert torch.allclose(features.clip_embeds, reference.clip_embeds, atol=1e-4)


def test_text_encoder_graph_equals_the_text_tower(exported):
    folder, torch_predictor = exported
    texts = ["star", "a lawn of grass", "traffic cone"]
    got = OnnxPredictor(folder, threads=1).encode_texts(texts)
    expected = torch_predictor.text_encoder.encode_texts(texts)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)


def test_precomputed_text_embeddings_replace_the_text_graph(exported, scene, tmp_path):
    folder, torch_predictor = exported
    without_text = tmp_path / "no_text"
    shutil.copytree(folder, without_text)
    (without_text / "text_encoder.onnx").unlink()
    settings = json.loads((without_text / "export.json").read_text())
    settings["graphs"] = ["image_encoder", "classifier"]
    (without_text / "export.json").write_text(json.dumps(settings))
    predictor = OnnxPredictor(without_text, threads=1)
    vocabulary = VOCABULARIES["4 classes, one with a synonym"]
    with pytest.raises(ExportError, match="no text_encoder.onnx"):
        predictor.set_vocabulary(vocabulary)
    torch_predictor.set_vocabulary(vocabulary)
    embeddings = torch_predictor.classifier.embeddings.numpy()
    with pytest.raises(ValueError, match=r"one row per synonym"):
        predictor.set_vocabulary(vocabulary, text_embeddings=embeddings[:-1])
    predictor.set_vocabulary(vocabulary, text_embeddings=embeddings)
    result = predictor.predict(scene, tasks="panoptic")
    expected = torch_predictor.predict(scene, tasks="panoptic")
    assert torch.equal(result["panoptic_seg"], expected["panoptic_seg"])


def test_a_folder_that_is_not_an_export_is_one_clear_error(tmp_path):
    with pytest.raises(ExportError, match="not an ovseg export"):
        OnnxPredictor(tmp_path)
    (tmp_path / "export.json").write_text("{truncated")
    with pytest.raises(ExportError, match="not valid JSON"):
        OnnxPredictor(tmp_path)


def test_bad_export_requests_exit_2_with_one_line_and_write_nothing(tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    code = export_main(["--model", "synthetic_tiny", "--out", str(target)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is not an ovseg export" in err
    assert target.read_text() == "keep me"
    code = export_main(["--model", "synthetic_tiny", "--out", str(tmp_path / "x"), "--opset", "16"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "17 or newer" in err
    assert not (tmp_path / "x").exists()
    assert list(tmp_path.iterdir()) == [target]


@pytest.fixture(scope="module")
def with_text_context(tmp_path_factory):
    """synthetic_tiny with every text-context part (learned context, visual-context decoder,
    CDT), their new weights random and large enough to change the logits, exported:
    (folder, PyTorch predictor)."""
    import dataclasses

    from ovseg import model_zoo
    from ovseg.checkpoint import read_state_dict
    from ovseg.config import TextContextConfig, load_config
    from ovseg.export import export_onnx
    from ovseg.modeling.fcclip import build_model

    cfg = load_config("synthetic_tiny")
    cfg = dataclasses.replace(
        cfg,
        text_context=TextContextConfig(
            learnable_context=4, visual_context_layers=1, visual_context_width=32, cdt=True
        ),
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    model.load_state_dict(read_state_dict(model_zoo.local_weights("synthetic_tiny")), strict=False)
    context = model.text_context
    with torch.no_grad():
        context.visual_decoder.gamma.fill_(0.5)
        context.cdt.attention.out_proj.weight.normal_(0, 0.2)
        context.context.context.normal_(0, 0.5)
    predictor = OVSegPredictor(model.eval(), cfg, use_disk_text_cache=False)
    folder = tmp_path_factory.mktemp("export_context") / "context"
    export_onnx(predictor, folder, progress=False)
    return folder, predictor


def test_a_text_context_is_exported_and_gives_pytorchs_logits(with_text_context, scene):
    folder, torch_predictor = with_text_context
    settings = read_export(folder)
    assert settings["learned_context"] == 4 and settings["text_reads_image"]
    assert settings["templates"] == ["X X X X {}."]
    vocabulary = VOCABULARIES["4 classes, one with a synonym"]
    onnx_predictor = OnnxPredictor(folder, threads=1)
    expected = torch_predictor.predict(scene, vocabulary=vocabulary, tasks="panoptic")
    result = onnx_predictor.predict(scene, vocabulary=vocabulary, tasks="panoptic")
    assert torch.allclose(result["class_logits"], expected["class_logits"], atol=1e-4, rtol=0)
    assert torch.equal(result["panoptic_seg"], expected["panoptic_seg"])
    # the parts matter: the context's text and the image-adapted logits differ from plain ones
    plain = OVSegPredictor.from_pretrained("synthetic_tiny", use_disk_text_cache=False)
    plain_text = plain.text_encoder.encode_texts(["ring"])
    assert not torch.allclose(onnx_predictor.encode_texts(["ring"]), plain_text, atol=1e-2)
    features = onnx_predictor.encode(scene)
    with_image = onnx_predictor.class_logits(features)["in_vocab"]
    onnx_predictor.settings["text_reads_image"] = False  # what an export ignoring it gives
    with pytest.raises(Exception, match="clip_dense"):
        onnx_predictor.class_logits(features)
    assert torch.isfinite(with_image).all()


def test_a_model_not_in_fp32_is_refused_before_any_work():
    predictor = SimpleNamespace(
        model=SimpleNamespace(text_context=None), precision=SimpleNamespace(precision="bf16")
    )
    with pytest.raises(ExportError, match="fp32"):
        check_exportable(predictor)


def test_bench_times_onnx_runtime_beside_pytorch(tmp_path, capsys):
    from ovseg.apps import bench

    out = tmp_path / "bench.json"
    args = ["--config", "fcclip_tiny_test", "--short-side", "64", "--repeats", "1"]
    args += ["--precisions", "fp32", "--onnx", "--no-agreement", "--no-peak", "--json", out]
    code = bench.main([str(a) for a in args])
    table = capsys.readouterr().out
    assert code == 0
    report = json.loads(out.read_text())
    assert list(report["runs"]) == ["fp32", "onnx"]
    onnx = report["runs"]["onnx"]["seconds_median"]
    assert onnx["image_network"] > 0 and onnx["total"] >= onnx["image_network"]
    assert max(v for k, v in report["onnx_check"].items() if k != "image_size") < 1e-3
    assert "image_network" in table and "x of fp32" in table


def test_predict_with_onnx_writes_the_files_pytorch_writes(exported, tmp_path, capsys):
    from PIL import Image

    import ovseg
    from ovseg.apps.predict import main as predict_main

    folder, _ = exported
    scene = Path(ovseg.__file__).parent / "assets" / "examples" / "synthetic_val_00001.png"
    common = [scene, "--vocab", "synthetic_world", "--task", "panoptic"]
    # fp32 for PyTorch too: "auto" may pick bf16 on this CPU, the export is fp32
    pytorch = [*common, "--precision", "fp32", "--output", tmp_path / "pt"]
    code, _, err = run_main(predict_main, pytorch, capsys)
    assert code == 0
    args = [*common, "--onnx", folder, "--output", tmp_path / "onnx"]
    code, _, err = run_main(predict_main, args, capsys)
    assert code == 0 and "ONNX Runtime" in err
    names = sorted(p.name for p in (tmp_path / "onnx").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "pt").iterdir())
    label_map = [
        np.asarray(Image.open(tmp_path / d / "synthetic_val_00001_labels.png"))
        for d in ("pt", "onnx")
    ]
    assert np.array_equal(*label_map)
    records = [
        json.loads((tmp_path / d / "synthetic_val_00001.json").read_text()) for d in ("pt", "onnx")
    ]
    assert [s["class"] for s in records[0]["segments"]] == [
        s["class"] for s in records[1]["segments"]
    ]
    assert records[1]["settings"]["onnx"] == str(folder.resolve())
    assert "model_caveat" in records[1]  # the exported toy model is still named as one


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--heatmap", "star"], "drop --heatmap"),
        (["--precision", "bf16"], "drop --precision bf16"),
        (["--points", "10,10"], "drop --points / --boxes"),
    ],
)
def test_predict_with_onnx_refuses_what_only_pytorch_does(
    exported, image, tmp_path, capsys, extra, message
):
    from ovseg.apps.predict import main as predict_main

    folder, _ = exported
    args = [image, "--classes", "star, grass", "--onnx", folder, "--output", tmp_path / "o", *extra]
    code, _, err = run_main(predict_main, args, capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_predict_with_onnx_refuses_a_folder_that_is_no_export(image, tmp_path, capsys):
    from ovseg.apps.predict import main as predict_main

    args = [image, "--classes", "star", "--onnx", tmp_path, "--output", tmp_path / "o"]
    code, _, err = run_main(predict_main, args, capsys)
    assert code == 2 and "not an ovseg export" in err and err.count("\n") == 1


def test_predict_with_a_corrupt_onnx_graph_is_one_line_exit_2(exported, image, tmp_path, capsys):
    import shutil

    from ovseg.apps.predict import main as predict_main

    folder = tmp_path / "export"
    shutil.copytree(exported[0], folder)
    graph = folder / "image_encoder.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])  # truncated: a download cut short
    args = [image, "--classes", "star", "--onnx", folder, "--output", tmp_path / "o"]
    code, _, err = run_main(predict_main, args, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "image_encoder.onnx cannot be loaded" in err and "export the model again" in err
    assert not (tmp_path / "o").exists()
