"""Pretrained weights by name: downloaded once from a loopback HTTP server through ACTIONBERT_MIRROR into a
temporary TORCH_HOME, verified, cached; refused when corrupt or cut short; one error line when unreachable.

The served files are tiny torchvision-format state dicts made here, registered as test-only registry entries with
their real SHA-256. Nothing here reaches the internet: every entry's publisher URL is on `.invalid`, so only the
mirror can serve it.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import re
import socket
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from actionbert import build_model, from_pretrained, load_weights
from actionbert.cli import main
from actionbert.hub import MIRROR_ENV, PretrainedError, cache_dir, download_url, fetch
from actionbert.models import BACKBONES
from actionbert.weights import FILTERS, WeightsError
from actionbert.weights_registry import CLASS_LISTS, REGISTRY, WeightsEntry, class_names

TINY = "r2plus1d_tiny"


# ================================================================================================ fixtures
class Server:
    """A loopback HTTP server (port chosen by the OS) serving `files`; counts requests; can misbehave."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.mode = "ok"  # "corrupt": other bytes of the same length; "cut": half the body, then close

    def handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                if server.mode == "corrupt":
                    body = body[::-1]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if server.mode == "cut" else body)
                self.close_connection = True  # "cut": the connection closes in the middle of the body

            def log_message(self, *args):
                pass

        return Handler


@pytest.fixture
def server():
    state = Server()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), state.handler())
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def hub(tmp_path, monkeypatch, server) -> Path:
    """A fresh TORCH_HOME and ACTIONBERT_MIRROR pointing at the loopback server; returns the cache folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv(MIRROR_ENV, server.url + "/")
    folder = tmp_path / "torch_home" / "hub" / "checkpoints"
    assert cache_dir() == folder
    return folder


def tiny_kinetics_state(num_classes: int = 400) -> dict[str, torch.Tensor]:
    """A torchvision-format (VideoResNet key names) state dict of our tiny R(2+1)D with an fc of `num_classes`."""
    torch.manual_seed(0)
    model = build_model(backbone=TINY, head="tgap", num_classes=num_classes, clip_len=16, input_size=32)
    with torch.no_grad():  # non-trivial statistics, so a tensor that did not load changes the output
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return {k.removeprefix("backbone."): v for k, v in model.state_dict().items()}


def serialized(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def register(monkeypatch, server: Server, name: str, data: bytes | None, *, sha256: str | None = "full",
             classes: str | None = None, num_classes: int = 400, url: bool = True) -> WeightsEntry:
    """A test-only registry entry for `data` (served by `server` unless None), with its real hash by default."""
    file_name = f"{name}-{hashlib.sha256(data or b'').hexdigest()[:8]}.pth"
    if sha256 in ("full", "prefix") and data is not None:
        digest = hashlib.sha256(data).hexdigest()
        sha256 = digest if sha256 == "full" else digest[:8]
    entry = WeightsEntry(name, file_name, "torchvision", TINY, 16, num_classes,
                         url=f"https://publisher.invalid/models/{file_name}" if url else None,
                         sha256=sha256 if url else None, hash_note="test", classes=classes,
                         where_to_get="" if url else "ask the test for it")
    monkeypatch.setitem(REGISTRY, name, entry)
    if data is not None:
        server.files[file_name] = data
    return entry


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ============================================================================================ download
@pytest.mark.parametrize("sha256", ["full", "prefix"])  # a full SHA-256 or a publisher's prefix of it
def test_download_once_then_the_cache_answers_without_a_request(hub, server, monkeypatch, sha256):
    state = tiny_kinetics_state()
    data = serialized(state)
    entry = register(monkeypatch, server, "tiny_k400", data, sha256=sha256)
    path = fetch("tiny_k400")
    assert path == hub / entry.file_name and path.read_bytes() == data
    assert server.requests == [f"/{entry.file_name}"]  # from the mirror, not the (unreachable) publisher URL
    assert fetch("tiny_k400") == path and len(server.requests) == 1
    model = build_model(backbone=TINY, head="bert", num_classes=5, clip_len=16, input_size=32)
    report = load_weights(model, "tiny_k400")  # the Python API by name: format from the registry
    assert len(server.requests) == 1 and report.source == "torchvision" and report.where == str(path)
    assert report.skipped == ["fc.weight", "fc.bias"]  # backbone only: the Kinetics classifier is not this one
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(model.state_dict()[f"backbone.{key}"], value), key
    assert leftovers(hub) == [entry.file_name]


def test_corrupted_download_is_refused_and_nothing_is_cached(hub, server, monkeypatch):
    entry = register(monkeypatch, server, "tiny_k400", serialized(tiny_kinetics_state()))
    server.mode = "corrupt"
    with pytest.raises(PretrainedError, match=r"does not match its published SHA-256 .*nothing was kept") as e:
        fetch("tiny_k400")
    assert str(hub / entry.file_name) in str(e.value) and "\n" not in str(e.value)
    assert leftovers(hub) == []  # neither the file nor a partial download


def test_interrupted_download_leaves_no_partial_file(hub, server, monkeypatch):
    entry = register(monkeypatch, server, "tiny_k400", serialized(tiny_kinetics_state()))
    server.mode = "cut"
    with pytest.raises(PretrainedError, match="cut short"):
        fetch("tiny_k400")
    assert not (hub / entry.file_name).exists() and leftovers(hub) == []
    server.mode = "ok"  # the next attempt downloads the whole file
    assert fetch("tiny_k400").read_bytes() == server.files[entry.file_name]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_gives_one_error_line_naming_url_and_path(hub, server, monkeypatch, tmp_path, capsys):
    entry = register(monkeypatch, server, "tiny_k400", serialized(tiny_kinetics_state()))
    mirror = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv(MIRROR_ENV, mirror)
    out = tmp_path / "folder"
    for argv in (["convert", "tiny_k400", "--out", str(out)],
                 ["train", "--pretrained", "tiny_k400", "--set", f"model.backbone={TINY}", "--out", str(out),
                  "--data", str(tmp_path / "no_data")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert f"fetch {mirror}/{entry.file_name} by hand and put it at {hub / entry.file_name}" in err[0]
    assert not out.exists() and leftovers(hub) == [] and server.requests == []


def test_mirror_replaces_the_publisher_url(monkeypatch):
    entry = REGISTRY["kinetics400_r2plus1d_18"]
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    assert download_url(entry) == entry.url
    for base in ("http://weights.example.org/pt", "http://weights.example.org/pt/"):
        monkeypatch.setenv(MIRROR_ENV, base)
        assert download_url(entry) == "http://weights.example.org/pt/r2plus1d_18-91a641e6.pth"


# ================================================================================== files in the cache
def test_cached_file_that_does_not_match_is_reported_and_left_alone(hub, server, monkeypatch):
    entry = register(monkeypatch, server, "tiny_k400", serialized(tiny_kinetics_state()))
    hub.mkdir(parents=True)
    (hub / entry.file_name).write_bytes(b"something else")  # e.g. put there by hand
    with pytest.raises(PretrainedError, match=r"does not match the published SHA-256 .*Delete it"):
        fetch("tiny_k400")
    assert (hub / entry.file_name).read_bytes() == b"something else" and server.requests == []


def test_file_without_url_says_where_to_get_it_and_where_to_put_it(hub, server, monkeypatch, tmp_path, capsys):
    entry = register(monkeypatch, server, "tiny_by_hand", None, url=False)
    assert main(["convert", "tiny_by_hand", "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: tiny_by_hand has no download URL: ask the test for it; put the file at "
                   f"{hub / entry.file_name}"]
    hub.mkdir(parents=True)
    torch.save(tiny_kinetics_state(), hub / entry.file_name)  # the user follows the instruction
    report = load_weights(build_model(backbone=TINY, head="tgap", num_classes=3, clip_len=16), "tiny_by_hand")
    assert report.missing == ["fc.weight", "fc.bias"] and server.requests == []


def test_name_is_checked_against_the_model_before_anything_downloads(hub, server, monkeypatch):
    register(monkeypatch, server, "tiny_k400", serialized(tiny_kinetics_state()))
    with pytest.raises(WeightsError, match=f"holds a {TINY} backbone, this model is mc3_tiny: set "
                                           f"model.backbone={TINY}"):
        load_weights(build_model(backbone="mc3_tiny", head="tgap", num_classes=3, clip_len=16), "tiny_k400")
    with pytest.raises(WeightsError, match="is a 'torchvision' file, not 'hara'"):
        load_weights(build_model(backbone=TINY, head="tgap", num_classes=3, clip_len=16), "tiny_k400",
                     source="hara")
    with pytest.raises(PretrainedError, match="no_such_weights: no such file, and not a known pretrained weights"):
        load_weights(build_model(backbone=TINY, head="tgap", num_classes=3, clip_len=16), "no_such_weights")
    assert server.requests == [] and leftovers(hub) == []


def test_models_weights_lists_the_registry_and_what_is_cached(hub, server, monkeypatch, capsys):
    register(monkeypatch, server, "tiny_k400", serialized(tiny_kinetics_state()))
    assert main(["models", "--weights"]) == 0
    before = capsys.readouterr().out
    fetch("tiny_k400")
    assert main(["models", "--weights"]) == 0
    after = capsys.readouterr().out
    for name in REGISTRY:
        assert name in before
    row = lambda text: next(line for line in text.splitlines() if line.startswith("tiny_k400 ")).split()  # noqa: E731
    assert row(before)[:4] == ["tiny_k400", TINY, "16", "400"] and row(before)[-1] == "no"
    assert row(after)[-1] == "yes" and f"cache: {hub}" in after
    assert re.search(r"hara_resnext101_64f_kinetics\s+resnext101_3d\s+64\s+400 .*no \(get it by hand\)", before)


# ============================================================================= Kinetics: predict at once
def test_convert_a_kinetics_name_then_predict_names_kinetics_classes(hub, server, monkeypatch, tmp_path, capsys,
                                                                     video_tools):
    state = tiny_kinetics_state()
    top = [123, 7, 300]  # a classifier whose top-3 does not depend on the video: bias dominates small weights
    state["fc.weight"] = state["fc.weight"] * 1e-3
    state["fc.bias"] = torch.zeros(400).index_put_((torch.tensor(top),), torch.tensor([30.0, 20.0, 10.0]))
    register(monkeypatch, server, "tiny_k400", serialized(state), classes="kinetics400")
    folder = tmp_path / "k400"
    assert main(["convert", "tiny_k400", "--out", str(folder), "--quiet", "--input-size", "32"]) == 0
    assert "loaded" in capsys.readouterr().out
    model, info = from_pretrained(folder)
    kinetics = CLASS_LISTS["kinetics400"]()
    assert info["classes"] == kinetics and info["clip_len"] == 16 and info["model"]["head"] == "tgap"
    assert torch.equal(model.fc.weight, state["fc.weight"]) and torch.equal(model.fc.bias, state["fc.bias"])
    video = video_tools.write_coded(tmp_path / "clip.mp4", 40, size=(48, 64))
    assert main(["predict", str(folder), str(video), "--json", "--topk", "3", "--eager"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert [t["label"] for t in result["topk"]] == [kinetics[i] for i in top]  # torchvision's names, in order
    clip = torch.randn(1, 3, 16, 32, 32)  # the classifier is the file's: same logits as its own layers give
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(clip), pre_logits=True)
        torch.testing.assert_close(model(clip), pooled @ state["fc.weight"].T + state["fc.bias"])


def test_kinetics_name_with_another_head_keeps_only_the_backbone(hub, server, monkeypatch, tmp_path, capsys):
    register(monkeypatch, server, "tiny_k400", serialized(tiny_kinetics_state()), classes="kinetics400")
    folder = tmp_path / "bert"
    assert main(["convert", "tiny_k400", "--out", str(folder), "--head", "bert", "--num-classes", "4"]) == 0
    assert "skipped fc.weight, fc.bias: not part of the backbone" in capsys.readouterr().out
    _, info = from_pretrained(folder)
    assert info["classes"] == [f"class_{i}" for i in range(4)]  # no Kinetics names on a new classifier


# ======================================================================================= fine-tune (CLI)
def test_train_fine_tunes_from_a_named_weight_in_one_command(hub, server, monkeypatch, tmp_path):
    from actionbert.checkpoint import load_checkpoint
    from actionbert.data import make_synthetic_dataset, prepare_dataset

    state = tiny_kinetics_state()
    register(monkeypatch, server, "tiny_k400", serialized(state), classes="kinetics400")
    raw = make_synthetic_dataset(tmp_path / "videos", num_classes=2, videos_per_class=3, num_frames=20,
                                 size=(48, 64), clip_len=16, seed=1)
    prepare_dataset(raw, tmp_path / "prepared", val_fraction=0.34, seed=0)
    code = main(["train", "--pretrained", "tiny_k400", "--data", str(tmp_path / "prepared"), "--out",
                 str(tmp_path / "run"), "--epochs", "1", "--quiet", "--set", f"model.backbone={TINY}",
                 "--set", "model.head=bert", "--set", "model.clip_len=16", "--set", "model.input_size=32",
                 "--set", "data.resize=36,48", "--set", "data.num_workers=0", "--set", "train.batch_size=2",
                 "--set", "train.max_steps_per_epoch=1", "--set", "train.lr=1e-12"])
    assert code == 0 and len(server.requests) == 1
    tuned = load_checkpoint(tmp_path / "run" / "last.pt")["model_state"]
    # with a vanishing learning rate the backbone still holds the downloaded weights
    torch.testing.assert_close(tuned["backbone.stem.0.weight"], state["stem.0.weight"])
    torch.testing.assert_close(tuned["backbone.layer4.0.conv1.0.0.weight"], state["layer4.0.conv1.0.0.weight"])


# ================================================================================ the registry itself
def test_every_registry_entry_is_well_formed():
    import torchvision.models.video as tvv

    torchvision_weights = {"r2plus1d_18": tvv.R2Plus1D_18_Weights, "r3d_18": tvv.R3D_18_Weights,
                           "mc3_18": tvv.MC3_18_Weights}
    assert len(REGISTRY) == 11
    for name, e in REGISTRY.items():
        assert e.name == name and e.backbone in BACKBONES and e.source in FILTERS, name
        assert e.clip_len > 0 and e.num_classes > 0 and e.licence and e.citation and e.hash_note, name
        if e.url is not None:  # downloadable: a hash to check, and the publisher's torch.hub-style name
            assert e.url.startswith("https://") and e.url.endswith("/" + e.file_name), name
            assert re.fullmatch(r"[0-9a-f]{8,64}", e.sha256 or ""), name
            assert re.search(r"-([0-9a-f]+)\.", e.file_name).group(1) == e.sha256, name
        else:  # explicitly unverifiable, with where to get it
            assert e.sha256 is None and e.where_to_get and "no hash published" in e.hash_note, name
        names = class_names(e)
        assert names is None or (len(names) == e.num_classes and len(set(names)) == e.num_classes), name
        if e.source == "torchvision":  # the facts torchvision itself ships
            weights = torchvision_weights[e.backbone].KINETICS400_V1
            assert e.url == weights.url and e.size_mib == weights.meta["_file_size"], name
            assert names == list(weights.meta["categories"]), name
    assert [e.num_classes for e in REGISTRY.values() if e.source == "ig65m"] == [359, 487, 400, 400]
