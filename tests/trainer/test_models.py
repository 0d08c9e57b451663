"""U-Net models: shapes for every backbone, skips by stride, normalisation, weights."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest

from trainer import plan as plan_module
from trainer.errors import FitplanError, WeightsError
from trainer.models import (
    BACKBONE_INFO,
    BACKBONES,
    STRIDES,
    build_unet,
    encoder_of,
    resolve_weights,
    set_encoder_trainable,
)
from trainer.models.encoders import stride_outputs
from trainer.models.layers import CaffePreprocess

# Two sizes per backbone: square, and non-square with an odd multiple of 32.
SIZES = ((64, 64), (64, 96))

_built: dict[str, keras.Model] = {}


def _model(backbone: str) -> keras.Model:
    """One binary 64x96 model per backbone, shared by the tests of this module."""
    if backbone not in _built:
        _built[backbone] = build_unet(backbone, (64, 96, 3), 2, seed=0)
    return _built[backbone]


def _batchnorms(model):
    from trainer.models.layers import iter_layers

    return [la for la in iter_layers(model) if isinstance(la, keras.layers.BatchNormalization)]


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    monkeypatch.setenv("FITPLAN_OFFLINE", "1")  # a missing file is never downloaded here
    return tmp_path / "kh" / "models"


def _write_legacy_h5(model: keras.Model, path) -> None:
    """Write weights in the legacy HDF5 layout of Keras' downloadable ImageNet files."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


# -- shapes -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("backbone", BACKBONES)
def test_output_has_input_height_and_width(backbone, size):
    h, w = size
    model = _model(backbone) if size == (64, 96) else build_unet(backbone, (h, w, 3), 2)
    assert model.output_shape == (None, h, w, 1)
    y = keras.ops.convert_to_numpy(model(np.random.rand(2, h, w, 3).astype("float32")))
    assert y.shape == (2, h, w, 1)
    assert y.dtype == np.float32
    assert 0.0 <= y.min() and y.max() <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("backbone", BACKBONES)
def test_encoder_outputs_are_at_strides_2_to_32(backbone):
    encoder = encoder_of(_model(backbone))
    assert encoder.name == "encoder"
    shapes = [tuple(o.shape[1:3]) for o in encoder.outputs]
    assert shapes == [(64 // s, 96 // s) for s in STRIDES]
    channels = tuple(o.shape[-1] for o in encoder.outputs)
    assert channels == BACKBONE_INFO[backbone]["skip_channels"]


@pytest.mark.slow
@pytest.mark.parametrize("backbone", BACKBONES)
def test_backbone_info_parameter_counts_are_measured(backbone):
    model = _model(backbone)
    assert model.count_params() == BACKBONE_INFO[backbone]["params"]
    assert encoder_of(model).count_params() == BACKBONE_INFO[backbone]["encoder_params"]


def test_smallest_input_32x32_still_finds_every_stride():
    # At 32x32 the squeeze-excite pools (1x1) have the bottleneck's size; the last
    # layer at that size must still be the encoder's own output.
    model = build_unet("mobilenet_v3_small", (32, 32, 3), 2)
    assert [tuple(o.shape[1:3]) for o in encoder_of(model).outputs] == [
        (16, 16),
        (8, 8),
        (4, 4),
        (2, 2),
        (1, 1),
    ]
    assert encoder_of(model).outputs[-1].shape[-1] == 576
    assert model.output_shape == (None, 32, 32, 1)


def test_binary_is_one_sigmoid_channel_multiclass_is_softmax():
    binary = build_unet("unet_small", (32, 64, 3), 2)
    multi = build_unet("unet_small", (32, 64, 3), 4)
    assert binary.get_layer("probabilities").get_config()["activation"] == "sigmoid"
    assert multi.get_layer("probabilities").get_config()["activation"] == "softmax"
    assert multi.output_shape == (None, 32, 64, 4)
    y = keras.ops.convert_to_numpy(multi(np.random.rand(1, 32, 64, 3).astype("float32")))
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=1e-5)


def test_unet_small_accepts_one_channel_input():
    model = build_unet("unet_small", (32, 32, 1), 2)
    assert model.output_shape == (None, 32, 32, 1)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"input_shape": (60, 64, 3)}, "multiples of 32"),
        ({"input_shape": (64, 64)}, "input_shape"),
        ({"input_shape": (64, 64, 1)}, "3 input channels"),
        ({"num_classes": 1}, "num_classes=1"),
        ({"normalization": "auto"}, "normalization='auto'"),
        ({"backbone": "vgg16"}, "backbone='vgg16'"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs, fragment):
    args = {"backbone": "mobilenet_v3_small", "input_shape": (64, 64, 3), "num_classes": 2}
    args.update(kwargs)
    backbone, shape, classes = (
        args.pop("backbone"),
        args.pop("input_shape"),
        args.pop("num_classes"),
    )
    with pytest.raises(FitplanError, match=fragment.replace("(", r"\(")):
        build_unet(backbone, shape, classes, **args)


def test_backbones_agree_with_the_plan_contract():
    assert BACKBONES == plan_module.BACKBONES


# -- normalisation ----------------------------------------------------------------


def test_frozen_normalization_freezes_every_batchnorm():
    model = build_unet("mobilenet_v3_small", (64, 64, 3), 2, normalization="frozen")
    bns = _batchnorms(model)
    assert len(bns) > 30 and not any(bn.trainable for bn in bns)
    assert any(bn.name.startswith("decoder") for bn in bns)
    # Frozen BatchNorm runs in inference mode: training=True changes nothing.
    x = np.random.rand(2, 64, 64, 3).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x, training=True)),
        keras.ops.convert_to_numpy(model(x, training=False)),
        atol=1e-6,
    )


def test_frozen_batchnorm_from_scratch_is_calibrated_not_identity():
    # Identity BatchNorm (never trained) made MobileNetV3Small's stride-16/32 features
    # vanish (std 3e-8 / 1e-10); calibrated statistics keep them at unit scale.
    model = build_unet("mobilenet_v3_small", (64, 64, 3), 2, normalization="frozen", seed=0)
    x = model.get_layer("input_scaling")(np.random.rand(2, 64, 64, 3).astype("float32"))
    stds = [float(np.std(keras.ops.convert_to_numpy(f))) for f in encoder_of(model)(x)]
    assert min(stds) > 0.05, stds
    # Too few calibration values per channel once gave near-zero variances: logit std 60.
    logits = keras.Model(model.input, model.get_layer("logits").output)
    assert np.std(keras.ops.convert_to_numpy(logits(np.random.rand(4, 64, 64, 3)))) < 5


def test_train_normalization_leaves_batchnorm_trainable():
    bns = _batchnorms(build_unet("unet_small", (32, 32, 3), 2, normalization="train"))
    assert bns and all(bn.trainable for bn in bns)


def test_training_batchnorm_statistics_catch_up_with_the_data_in_a_short_run():
    """Moving statistics are what validation uses: after 60 steps they must match the data.

    The learning rate is 0, so only the statistics change. Measured with this setup: the
    mean |inference - training| output was 0.157 after 60 steps at Keras' momentum 0.99,
    0.014 at 0.9 (0.0006 after 90). MobileNetV3Small converges more slowly here (0.048
    after 90 steps at 0.9, 0.113 at 0.99): its deep 2x2 maps amplify small differences.
    """
    from trainer.models.layers import TRAIN_BN_MOMENTUM

    model = build_unet("unet_small", (64, 64, 3), 2, normalization="train", seed=0)
    bns = _batchnorms(model)
    assert bns and {bn.momentum for bn in bns} == {TRAIN_BN_MOMENTUM}
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    x = (0.3 + 0.4 * rng.random((8, 64, 64, 3))).astype("float32")  # not mean 0, var 1
    y = (rng.random((8, 64, 64, 1)) > 0.5).astype("float32")
    for _ in range(60):
        model.train_on_batch(x, y)
    infer = model(x, training=False).numpy()
    train = model(x, training=True).numpy()
    assert np.abs(infer - train).mean() < 0.03, np.abs(infer - train).mean()


def test_group_normalization_in_decoder_encoder_batchnorm_frozen():
    model = build_unet("mobilenet_v3_small", (64, 64, 3), 2, normalization="group")
    groups = [la for la in model.layers if isinstance(la, keras.layers.GroupNormalization)]
    assert len(groups) == 10  # two per decoder stage
    bns = _batchnorms(model)
    assert bns and all(not bn.trainable for bn in bns)
    assert not any(bn.name.startswith("decoder") for bn in bns)


def _n_trainable(model) -> int:
    return len(model.trainable_weights)


@pytest.mark.parametrize("normalization", ["train", "frozen"])
def test_set_encoder_trainable_toggles_encoder_weights(normalization):
    model = build_unet("mobilenet_v3_small", (64, 64, 3), 2, normalization=normalization)
    encoder = encoder_of(model)
    before, enc_before = _n_trainable(model), _n_trainable(encoder)
    assert enc_before > 0

    set_encoder_trainable(model, False, normalization)
    assert _n_trainable(encoder) == 0
    assert _n_trainable(model) == before - enc_before

    set_encoder_trainable(model, True, normalization)
    assert _n_trainable(encoder) == enc_before
    assert _n_trainable(model) < len(model.weights)  # BatchNorm statistics never train
    bn_trainable = [bn.trainable for bn in _batchnorms(model)]
    # "train" gets its BatchNorm back; "frozen" keeps it in inference mode after unfreezing.
    assert all(bn_trainable) if normalization == "train" else not any(bn_trainable)


# -- precision and seeds ----------------------------------------------------------


def test_mixed_precision_output_stays_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_unet("unet_small", (32, 32, 3), 3)
        assert model.get_layer("logits").compute_dtype == "bfloat16"
        y = model(np.random.rand(1, 32, 32, 3).astype("float32"))
        assert model.output.dtype == "float32"
        assert keras.backend.standardize_dtype(y.dtype) == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_seed_repeats_initial_weights():
    a = build_unet("unet_small", (32, 32, 3), 2, seed=7)
    b = build_unet("unet_small", (32, 32, 3), 2, seed=7)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)


def test_caffe_preprocess_matches_keras_resnet_preprocess_input():
    x = np.random.rand(2, 4, 4, 3).astype("float32")
    ours = keras.ops.convert_to_numpy(CaffePreprocess()(x))
    theirs = keras.applications.resnet50.preprocess_input(x * 255.0)
    np.testing.assert_allclose(ours, keras.ops.convert_to_numpy(theirs), rtol=1e-5, atol=1e-3)


def test_saved_model_round_trips_through_keras_format(tmp_path):
    model = build_unet("unet_small", (32, 32, 3), 2)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.rand(1, 32, 32, 3).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6
    )
    # ResNet50's custom input layer must also deserialise.
    tiny = keras.Sequential([keras.Input((4, 4, 3)), CaffePreprocess(name="input_scaling")])
    tiny.save(tmp_path / "tiny.keras")
    assert isinstance(keras.saving.load_model(tmp_path / "tiny.keras").layers[0], CaffePreprocess)


# -- weights ----------------------------------------------------------------------


def test_resolve_weights_none_is_none():
    assert resolve_weights("resnet50", "none") is None


def test_missing_imagenet_file_names_file_and_directory(keras_home):
    with pytest.raises(WeightsError) as info:
        resolve_weights("mobilenet_v3_small", "imagenet")
    text = str(info.value)
    assert "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5" in text
    assert str(keras_home) in text
    assert info.value.exit_code == 6


def test_cached_imagenet_file_is_found(keras_home):
    target = keras_home / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    assert resolve_weights("resnet50", "imagenet") == str(target.resolve())


def test_missing_local_weights_file_is_named(tmp_path):
    missing = tmp_path / "nope.weights.h5"
    with pytest.raises(WeightsError, match="nope.weights.h5"):
        resolve_weights("efficientnet_b0", str(missing))


def test_unet_small_has_no_imagenet_weights(keras_home):
    with pytest.raises(WeightsError, match="no pretrained weights"):
        resolve_weights("unet_small", "imagenet")
    with pytest.raises(WeightsError, match="no pretrained weights"):
        build_unet("unet_small", (32, 32, 3), 2, weights="imagenet")


def test_build_fails_before_building_when_imagenet_file_absent(keras_home, monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("the encoder was built before the weights were checked")

    monkeypatch.setattr(keras.applications, "MobileNetV3Large", no_build)
    with pytest.raises(WeightsError, match="weights_mobilenet_v3_large"):
        build_unet("mobilenet_v3_large", (64, 64, 3), 2, weights="imagenet")


def test_imagenet_weights_are_loaded_from_the_keras_cache(keras_home):
    source = keras.applications.MobileNetV3Small(
        input_shape=(96, 96, 3), include_top=False, weights=None
    )
    _write_legacy_h5(source, keras_home / BACKBONE_INFO["mobilenet_v3_small"]["pretrained_file"])
    # Another input size than the file was written for: no-top weights do not care.
    # "frozen" must keep the file's BatchNorm statistics (only the decoder's are set).
    model = build_unet(
        "mobilenet_v3_small", (64, 96, 3), 2, weights="imagenet", normalization="frozen"
    )
    loaded = encoder_of(model).get_weights()
    expected = source.get_weights()
    assert len(loaded) == len(expected)
    for a, b in zip(loaded, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_corrupt_weights_file_is_a_weights_error_naming_it(keras_home):
    bad = keras_home / BACKBONE_INFO["mobilenet_v3_small"]["pretrained_file"]
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(WeightsError, match="weights_mobilenet_v3_small"):
        build_unet("mobilenet_v3_small", (64, 64, 3), 2, weights="imagenet")


def test_unet_small_loads_encoder_weights_from_a_path(tmp_path):
    first = build_unet("unet_small", (32, 32, 3), 2, seed=1)
    path = tmp_path / "enc.weights.h5"
    encoder_of(first).save_weights(path)
    second = build_unet("unet_small", (32, 32, 3), 2, weights=str(path), seed=2)
    for a, b in zip(encoder_of(second).get_weights(), encoder_of(first).get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_pretrained_file_names_are_the_ones_keras_downloads(monkeypatch):
    asked = []

    class Intercepted(Exception):
        pass

    def fake_get_file(fname, *args, **kwargs):
        asked.append(fname)
        raise Intercepted

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", fake_get_file)
    for backbone, info in BACKBONE_INFO.items():
        if info["application"] is None:
            continue
        constructor = getattr(keras.applications, info["application"])
        with pytest.raises(Intercepted):
            constructor(input_shape=(32, 32, 3), include_top=False, weights="imagenet")
        assert asked[-1] == info["pretrained_file"], backbone


@pytest.mark.slow
def test_efficientnet_b0_imagenet_matches_keras_own_imagenet_model(keras_home, monkeypatch):
    """Keras adds an input rescaling for ImageNet EfficientNetB0; ours must match it."""
    source = keras.applications.EfficientNetB0(
        input_shape=(64, 64, 3), include_top=False, weights=None
    )
    norm = next(la for la in source.layers if isinstance(la, keras.layers.Normalization))
    norm.set_weights(
        [np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]), np.array(0)]
    )
    norm.finalize_state()
    path = keras_home / "efficientnetb0_notop.h5"
    _write_legacy_h5(source, path)
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", lambda *a, **k: str(path))
    reference = keras.applications.EfficientNetB0(
        input_shape=(64, 64, 3), include_top=False, weights="imagenet"
    )
    model = build_unet("efficientnet_b0", (64, 64, 3), 2, weights="imagenet")
    x = np.random.rand(2, 64, 64, 3).astype("float32") * 255.0
    # Deep features of a random encoder are tiny (1e-5 at stride 32): compare every
    # stride relative to its own scale, or the check would pass without the fix.
    ours = encoder_of(model)(x)
    theirs = keras.Model(reference.input, stride_outputs(reference, 64, 64))(x)
    for a, b in zip(ours, theirs, strict=True):
        a, b = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        scale = np.abs(b).max()
        assert scale > 0
        np.testing.assert_allclose(a / scale, b / scale, atol=1e-5)


def test_importing_trainer_models_does_not_import_tensorflow():
    code = (
        "import sys, trainer.models as m; m.BACKBONE_INFO; m.resolve_weights('resnet50', 'none');"
        "sys.exit(1 if 'keras' in sys.modules or 'tensorflow' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
