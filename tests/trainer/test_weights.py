"""ImageNet weights: downloaded through Keras into its cache, from a local server only (issue 15, 2).

Every download here goes to an `http.server` on 127.0.0.1 serving a generated weights
file; the URL and hash the code uses are monkeypatched. Never the network.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import keras
import numpy as np
import pytest

from trainer.errors import WeightsError
from trainer.models import BACKBONE_INFO, build_unet, encoder_of, resolve_weights
from trainer.models.weights import OFFLINE_ENV, pretrained_or_none

BACKBONE = "mobilenet_v3_small"
FNAME = BACKBONE_INFO[BACKBONE]["pretrained_file"]


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    monkeypatch.delenv(OFFLINE_ENV, raising=False)
    return tmp_path / "kh" / "models"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A local HTTP server with a generated no-top MobileNetV3Small weights file."""
    from tests.trainer.test_models import _write_legacy_h5

    root = tmp_path_factory.mktemp("www")
    source = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), include_top=False, weights=None
    )
    _write_legacy_h5(source, root / FNAME)
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    md5 = hashlib.md5((root / FNAME).read_bytes()).hexdigest()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    yield {"url": url, "md5": md5, "weights": source.get_weights(), "requests": requests}
    server.shutdown()


def _point_at(monkeypatch, url: str, md5: str) -> None:
    monkeypatch.setitem(BACKBONE_INFO[BACKBONE], "pretrained_url", url)
    monkeypatch.setitem(BACKBONE_INFO[BACKBONE], "pretrained_hash", md5)


def test_published_hashes_are_keras_own():
    from keras.src.applications import efficientnet, efficientnet_v2, mobilenet_v3, resnet

    expected = {
        "mobilenet_v3_small": mobilenet_v3.WEIGHTS_HASHES["small_224_1.0_float"][1],
        "mobilenet_v3_large": mobilenet_v3.WEIGHTS_HASHES["large_224_1.0_float"][1],
        "efficientnet_b0": efficientnet.WEIGHTS_HASHES["b0"][1],
        "efficientnetv2_b0": efficientnet_v2.WEIGHTS_HASHES["b0"][1],
        "resnet50": resnet.WEIGHTS_HASHES["resnet50"][1],
    }
    for backbone, md5 in expected.items():
        assert BACKBONE_INFO[backbone]["pretrained_hash"] == md5, backbone


def test_missing_file_is_downloaded_into_the_keras_cache_and_loads(keras_home, served, monkeypatch):
    _point_at(monkeypatch, served["url"], served["md5"])
    path = resolve_weights(BACKBONE, "imagenet")
    assert Path(path) == (keras_home / FNAME).resolve()
    assert sorted(p.name for p in keras_home.iterdir()) == [FNAME]  # no temporary left
    assert f"/{FNAME}" in served["requests"]
    model = build_unet(BACKBONE, (32, 32, 3), 2, weights="imagenet", normalization="frozen")
    for a, b in zip(encoder_of(model).get_weights(), served["weights"], strict=True):
        np.testing.assert_array_equal(a, b)
    served["requests"].clear()
    assert resolve_weights(BACKBONE, "imagenet") == path  # cached: no second request
    assert served["requests"] == []


def test_a_file_with_the_wrong_hash_is_refused_and_not_cached(keras_home, served, monkeypatch):
    _point_at(monkeypatch, served["url"], "0" * 32)
    with pytest.raises(WeightsError, match=FNAME):
        resolve_weights(BACKBONE, "imagenet")
    assert not (keras_home / FNAME).exists()
    assert [p.name for p in keras_home.iterdir()] == []  # the temporary folder is gone


def test_offline_explicit_imagenet_names_the_missing_file(keras_home, served, monkeypatch):
    _point_at(monkeypatch, "http://127.0.0.1:9/", served["md5"])  # nothing listens there
    with pytest.raises(WeightsError) as info:
        resolve_weights(BACKBONE, "imagenet")
    message = str(info.value)
    assert FNAME in message and str(keras_home) in message and "download" in message
    assert "\n" not in info.value.message


def test_offline_planning_falls_back_to_scratch_with_a_one_line_notice(keras_home, monkeypatch):
    monkeypatch.setenv(OFFLINE_ENV, "1")  # and no request at all
    _point_at(monkeypatch, "http://127.0.0.1:9/", "0" * 32)
    weights, notice = pretrained_or_none(BACKBONE, "imagenet")
    assert weights == "none"
    assert "from scratch" in notice and FNAME in notice and "\n" not in notice
    assert pretrained_or_none("unet_small", "imagenet")[0] == "none"
    assert pretrained_or_none(BACKBONE, "none") == ("none", None)


def test_cached_file_means_pretrained_plan(keras_home, served, monkeypatch):
    _point_at(monkeypatch, served["url"], served["md5"])
    assert pretrained_or_none(BACKBONE, "imagenet") == ("imagenet", None)


# -- the training head: logits for the loss, probabilities for inference -------------


def test_logits_model_weights_load_into_the_probabilities_model(tmp_path):
    from trainer.models import outputs_logits, with_probabilities

    logits = build_unet("unet_small", (32, 32, 3), 3, seed=0, output="logits")
    probs = build_unet("unet_small", (32, 32, 3), 3, seed=1)
    assert outputs_logits(logits) and not outputs_logits(probs)
    logits.save_weights(tmp_path / "w.weights.h5")
    probs.load_weights(tmp_path / "w.weights.h5")
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    z = np.asarray(logits.predict_on_batch(x))
    expected = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    np.testing.assert_allclose(probs.predict_on_batch(x), expected, atol=1e-5)
    wrapped = with_probabilities(logits)  # the same weights, sigmoid/softmax on top
    np.testing.assert_allclose(wrapped.predict_on_batch(x), expected, atol=1e-5)
    assert with_probabilities(probs) is probs


def test_pretrained_encoder_keeps_batchnorm_frozen_while_fine_tuning():
    from trainer.models import set_encoder_trainable
    from trainer.models.layers import batchnorm_layers

    model = build_unet(BACKBONE, (32, 32, 3), 2, normalization="train", seed=0)
    encoder = encoder_of(model)
    encoder_bns = {id(b) for b in batchnorm_layers(encoder)}
    decoder_bns = [b for b in batchnorm_layers(model) if id(b) not in encoder_bns]
    set_encoder_trainable(model, True, "train", pretrained=True)
    assert encoder.trainable and all(not b.trainable for b in batchnorm_layers(encoder))
    assert decoder_bns and all(b.trainable for b in decoder_bns)
    assert any(w.trainable for w in encoder.weights)  # the convolutions fine-tune
    set_encoder_trainable(model, False, "train")  # from scratch: frozen, then fine-tuned
    set_encoder_trainable(model, True, "train")  # its encoder BatchNorm trains
    assert all(b.trainable for b in batchnorm_layers(encoder))


def test_planner_freezes_a_share_of_the_budgeted_epochs_only_when_pretrained():
    from planner.search.finetune import freeze_epochs

    assert freeze_epochs("none", 40) == 0
    assert [freeze_epochs("imagenet", e) for e in (1, 2, 8, 20, 40, 100)] == [0, 1, 1, 2, 4, 5]


def test_planner_plans_from_scratch_with_a_warning_when_offline(keras_home, monkeypatch):
    from planner.search.finetune import plan_weights
    from trainer.errors import FitplanWarning

    monkeypatch.setenv(OFFLINE_ENV, "1")
    with pytest.warns(FitplanWarning, match="from scratch"):
        got = plan_weights(BACKBONE, "imagenet", 4, "frozen")
    assert got[:2] == ("none", "train")  # frozen BatchNorm from scratch collapses
    keras_home.mkdir(parents=True)
    (keras_home / FNAME).touch()  # cached: the plan stays pretrained, its mode as chosen
    assert plan_weights(BACKBONE, "imagenet", 4, "frozen") == ("imagenet", "frozen", None)
    assert plan_weights("unet_small", "none", 4, "train") == ("none", "train", None)
