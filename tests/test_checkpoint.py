"""The converter maps every key of the official checkpoint; weights files are read safely."""

import pytest
import torch

from conftest import PARITY
from ovseg.checkpoint import (
    WeightsError,
    check_state_dict,
    convert_official_state_dict,
    load_weights,
    read_state_dict,
    save_weights,
)
from ovseg.config import load_config
from ovseg.modeling.fcclip import build_model

OFFICIAL = PARITY / "fcclip_tiny_official.pth"


def parse_shape(text: str) -> tuple[int, ...]:
    """A shape of the official key table: '768x256' -> (768, 256); 'scalar' -> ()."""
    return () if text == "scalar" else tuple(int(s) for s in text.split("x"))


def official_key_table():
    """(key, shape) rows of the official ConvNeXt-L checkpoint, shipped as test data."""
    rows = []
    with open(PARITY.parent / "fcclip_state_dict_keys.tsv", encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or line.startswith("key\t"):
                continue
            key, shape, _status = line.rstrip("\n").split("\t")
            rows.append((key, parse_shape(shape)))
    return rows


def test_full_size_official_keys_map_exactly():
    rows = official_key_table()
    assert len(rows) == 846
    official = {key: torch.empty(shape, device="meta") for key, shape in rows}
    converted = convert_official_state_dict(official)
    model = build_model(load_config("fcclip_convnext_large_coco"), device="meta")
    check_state_dict(model, converted)  # raises on any missing / unexpected / mis-shaped key
    assert len(converted) == len(model.state_dict()) == 845
    assert "criterion.empty_weight" not in converted


def test_unknown_official_key_is_named():
    with pytest.raises(WeightsError, match="sem_seg_head.extra"):
        convert_official_state_dict(
            {
                "sem_seg_head.predictor.logit_scale": torch.zeros(()),
                "sem_seg_head.extra.weight": torch.zeros(1),
                "weird.key": torch.zeros(1),
            }
        )


@pytest.fixture(scope="module")
def tiny_model():
    model = build_model(load_config("fcclip_tiny_parity"))
    load_weights(model, OFFICIAL)
    return model


def test_tiny_round_trip_through_safetensors(tiny_model, tmp_path):
    official = torch.load(OFFICIAL, weights_only=True)["model"]
    path = tmp_path / "tiny.safetensors"
    save_weights(tiny_model.state_dict(), path)
    again = build_model(load_config("fcclip_tiny_parity"))
    load_weights(again, path)
    converted = convert_official_state_dict(official)
    for key, tensor in again.state_dict().items():
        torch.testing.assert_close(tensor, converted[key], rtol=0, atol=0, msg=key)
    # Without the CLIP weights the file is smaller and needs open_clip's weights.
    head_only = tmp_path / "head.safetensors"
    save_weights(tiny_model.state_dict(), head_only, include_clip=False)
    assert not any(k.startswith("backbone.") for k in read_state_dict(head_only))
    with pytest.raises(WeightsError, match="no CLIP weights") as error:
        load_weights(build_model(load_config("fcclip_tiny_parity")), head_only)
    assert "load_clip_weights" not in str(error.value)  # says what to do, not a Python name
    load_weights(again, head_only, clip_loaded=True)


def test_corrupt_truncated_and_wrong_weights(tmp_path, tiny_model):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a weights file at all" * 10)
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        read_state_dict(garbage)
    good = tmp_path / "good.safetensors"
    save_weights(tiny_model.state_dict(), good)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        read_state_dict(truncated)
    truncated_pth = tmp_path / "truncated.pth"
    truncated_pth.write_bytes(OFFICIAL.read_bytes()[:100_000])
    with pytest.raises(WeightsError, match="not a readable torch checkpoint"):
        read_state_dict(truncated_pth)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="empty"):
        read_state_dict(empty)
    big = build_model(load_config("fcclip_convnext_large_coco"), device="meta")
    with pytest.raises(WeightsError, match="mis-shaped"):
        check_state_dict(big, read_state_dict(good))


class NotATensor:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_pickled_objects_are_never_loaded(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        torch.save({"model": {"x": NotATensor()}}, f)
    with pytest.raises(WeightsError, match="objects other than tensors"):
        read_state_dict(path)


def test_written_files_get_the_permissions_of_a_plain_open(tmp_path):
    """.safetensors outputs came out mode 0600 (safetensors renames its own private temp
    file) while PNG / JSON outputs were 0644: every atomic write now ends with the umask's."""
    import os
    import stat

    from ovseg.fileio import atomic_write, atomic_write_many

    umask = os.umask(0o022)
    try:
        save_weights({"weight": torch.zeros(3)}, tmp_path / "model.safetensors")
        atomic_write(tmp_path / "a.txt", lambda tmp: open(tmp, "w").close())
        atomic_write_many({tmp_path / "b.safetensors": lambda tmp: _safetensors_to(tmp)})
    finally:
        os.umask(umask)
    for name in ("model.safetensors", "a.txt", "b.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def _safetensors_to(path):
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, path)
