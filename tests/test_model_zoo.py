"""Model zoo downloads (atomic, checksummed, non-checkpoint answers refused) and building from
any open_clip ConvNeXt."""

import dataclasses
import hashlib
import http.server
import threading

import pytest
import torch

from ovseg import model_zoo
from ovseg.config import config_from_dict, load_config
from ovseg.modeling.fcclip import build_model

# What Google Drive sends instead of a large file: a page asking to confirm the download.
DRIVE_CONFIRMATION_PAGE = (
    b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head>"
    b"<body>Google Drive can't scan this file for viruses. <form>Download anyway</form>"
    b"</body></html>"
)
OFFICIAL = "fcclip_convnext_large_coco"
OFFICIAL_PAGE = "https://drive.google.com/file/d/1-91PIns86vyNaL3CzMmDD39zKGnPMtvj/view"


@pytest.fixture
def fake_entry(tmp_path, monkeypatch):
    source = tmp_path / "release.pth"
    torch.save({"weight": torch.arange(1000.0)}, source)  # a real (zip) torch checkpoint
    entry = model_zoo.ZooEntry(
        name="fake",
        config="fcclip_tiny_parity",
        filename="fake.pth",
        description="test",
        url=source.as_uri(),
        sha256=hashlib.sha256(source.read_bytes()).hexdigest(),
    )
    monkeypatch.setitem(model_zoo.MODEL_ZOO, "fake", entry)
    return entry


@pytest.fixture
def local_server(monkeypatch):
    """An HTTP server on 127.0.0.1 in a thread; set ``.answer = (headers, body)`` and request
    ``.url``. Its Content-Length header is whatever the test says, so it can lie."""
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("no_proxy", "*")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            headers, body = server.answer
            self.send_response(200)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    server.url = f"http://127.0.0.1:{server.server_port}/uc?export=download&id=abc"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def assert_nothing_kept():
    # only the parity fixture's weights (tests/conftest.py): no target, no temp file
    assert [p.name for p in model_zoo.weights_dir().iterdir()] == ["fcclip_tiny_official.pth"]


def assert_says_how_to_fetch_by_hand(message, entry):
    assert f"put it at {model_zoo.weights_dir() / entry.filename} " in message
    assert "OVSEG_WEIGHTS" in message and "--weights FILE" in message


def test_download_is_atomic_and_checksummed(fake_entry, tmp_path, monkeypatch):
    path = model_zoo.download_weights("fake", progress=False)
    assert path == model_zoo.weights_dir() / "fake.pth"
    assert path.read_bytes() == (tmp_path / "release.pth").read_bytes()
    assert model_zoo.local_weights("fake") == path
    path.unlink()
    bad = dataclasses.replace(fake_entry, sha256="0" * 64)
    monkeypatch.setitem(model_zoo.MODEL_ZOO, "fake", bad)
    with pytest.raises(ValueError, match="checksum mismatch"):
        model_zoo.download_weights("fake", progress=False)
    assert_nothing_kept()


def test_google_drive_html_page_is_refused_with_manual_steps(local_server, monkeypatch):
    """The official entry's Google Drive URL, answered (locally) by the confirmation page."""
    local_server.answer = ({"Content-Type": "text/html; charset=utf-8"}, DRIVE_CONFIRMATION_PAGE)
    entry = model_zoo.get_entry(OFFICIAL)
    real_urlopen = model_zoo.urllib.request.urlopen

    def urlopen_locally(url, **kwargs):
        assert url == entry.url
        return real_urlopen(local_server.url, **kwargs)

    monkeypatch.setattr(model_zoo.urllib.request, "urlopen", urlopen_locally)
    with pytest.raises(ValueError) as error:
        model_zoo.download_weights(OFFICIAL, progress=False)
    message = str(error.value)
    assert "Google Drive answered with an HTML page" in message and "not the checkpoint" in message
    assert f"open {OFFICIAL_PAGE} in a browser, download fcclip_cocopan.pth" in message
    assert_says_how_to_fetch_by_hand(message, entry)
    assert_nothing_kept()


def test_html_body_without_content_type_is_refused(fake_entry, tmp_path, monkeypatch):
    page = tmp_path / "page.pth"  # a file:// answer has no real content type
    page.write_bytes(b"\n  " + DRIVE_CONFIRMATION_PAGE)
    entry = dataclasses.replace(fake_entry, url=page.as_uri(), sha256=None)
    monkeypatch.setitem(model_zoo.MODEL_ZOO, "fake", entry)
    with pytest.raises(ValueError, match="answered with an HTML page, not the checkpoint") as error:
        model_zoo.download_weights("fake", progress=False)
    assert_says_how_to_fetch_by_hand(str(error.value), entry)
    assert_nothing_kept()


def test_truncated_answer_is_refused(fake_entry, tmp_path, local_server, monkeypatch):
    body = (tmp_path / "release.pth").read_bytes()
    local_server.answer = (
        {"Content-Type": "application/octet-stream", "Content-Length": str(len(body) + 5000)},
        body,
    )
    entry = dataclasses.replace(fake_entry, url=local_server.url, sha256=None)
    monkeypatch.setitem(model_zoo.MODEL_ZOO, "fake", entry)
    expected = f"stopped after {len(body)} of {len(body) + 5000} bytes \\(truncated\\)"
    with pytest.raises(ValueError, match=expected) as error:
        model_zoo.download_weights("fake", progress=False)
    assert_says_how_to_fetch_by_hand(str(error.value), entry)
    assert_nothing_kept()


def test_wrong_recorded_size_is_refused(fake_entry, tmp_path, monkeypatch):
    size = (tmp_path / "release.pth").stat().st_size
    entry = dataclasses.replace(fake_entry, size=size + 1, sha256=None)
    monkeypatch.setitem(model_zoo.MODEL_ZOO, "fake", entry)
    with pytest.raises(ValueError, match=f"{size} bytes, but fake.pth has {size + 1}") as error:
        model_zoo.download_weights("fake", progress=False)
    assert_says_how_to_fetch_by_hand(str(error.value), entry)
    assert_nothing_kept()


def test_unreachable_server_is_a_one_line_error(fake_entry, local_server, monkeypatch):
    url = local_server.url
    local_server.shutdown()
    local_server.server_close()  # nothing listens on that port now
    monkeypatch.setitem(model_zoo.MODEL_ZOO, "fake", dataclasses.replace(fake_entry, url=url))
    with pytest.raises(ValueError, match="could not reach 127.0.0.1") as error:
        model_zoo.download_weights("fake", progress=False)
    assert_says_how_to_fetch_by_hand(str(error.value), fake_entry)
    assert_nothing_kept()


def test_missing_weights_and_download_errors_give_the_same_steps():
    message = model_zoo.missing_weights_message(OFFICIAL)
    assert message.endswith(model_zoo.manual_fetch_steps(OFFICIAL))
    assert f"open {OFFICIAL_PAGE} in a browser" in message
    assert_says_how_to_fetch_by_hand(message, model_zoo.get_entry(OFFICIAL))


def test_unknown_model_lists_choices():
    with pytest.raises(KeyError, match="fcclip_convnext_large_coco"):
        model_zoo.get_entry("nope")


def test_hyphenated_names_are_the_same_entry():
    assert model_zoo.get_entry("synthetic-tiny") is model_zoo.get_entry("synthetic_tiny")
    assert model_zoo.local_weights("synthetic-tiny") is not None  # shipped in the repository


@pytest.mark.parametrize(
    "name,channels,embed",
    [
        ("convnext_large_d_320", [192, 384, 768, 1536], 768),
        ("convnext_base_w", [128, 256, 512, 1024], 640),
    ],
)
def test_any_open_clip_convnext_by_config(name, channels, embed):
    cfg = config_from_dict({"clip": {"model_name": name}})
    model = build_model(cfg, device="meta")
    assert list(model.backbone.feature_channels.values()) == channels
    assert model.backbone.embed_dim == embed
    assert model.void_embedding.weight.shape == (1, embed)
    assert model.transformer_decoder.class_embed.layers[-1].out_features == embed


def test_unknown_config_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("pixel_decoder:\n  conv_dims: 64\n")
    with pytest.raises(ValueError, match="pixel_decoder.conv_dims"):
        load_config(path)
