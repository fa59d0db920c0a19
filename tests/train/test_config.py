"""validate(): every field with a closed set of values or a range fails with one clear line."""

import pytest

from avfbp_jax.train.config import RunSetupError, validate
from avfbp_jax.train.presets import afew_config, iemocap_config, synthetic_config, tiny_config


def test_presets_are_valid():
    for config in (synthetic_config("audio"), iemocap_config("gfbp"), afew_config(),
                   tiny_config("late", dtype="bfloat16"), synthetic_config("am-mutan"),
                   synthetic_config("mcb")):
        validate(config)


@pytest.mark.parametrize("field,value,match", [
    ("model.fusion", "sum", "config.model.fusion='sum': expected one of 'audio', 'video', "
                            "'concat', 'late', 'gfbp', 'agfbp', 'amfbp'"),
    ("model.fbp_impl", "triton", "config.model.fbp_impl='triton': expected one of 'xla'"),
    ("model.dtype", "float16", "model.dtype='float16'"),
    ("model.video.encoder", "vit", "model.video.encoder='vit'"),
    ("model.audio.attention", "3d", "model.audio.attention='3d'"),
    ("train.optimizer", "adam", "train.optimizer='adam': expected one of 'adamw', 'sgd', 'lamb'"),
    ("train.schedule", "linear", "train.schedule='linear'"),
    ("train.keep_best", "val/f1", "train.keep_best='val/f1'"),
    ("data.corpus", "ravdess", "data.corpus='ravdess'"),
    ("train.batch_size", 0, "config.train.batch_size=0: expected >= 1"),
    ("train.num_steps", -5, "train.num_steps=-5: expected >= 1"),
    ("train.learning_rate", 0.0, "learning_rate=0.0: expected > 0"),
    ("model.fbp_dropout", 1.0, r"fbp_dropout=1.0: expected in \[0, 1\)"),
    ("model.num_trunks", 0, "num_trunks=0"),
    ("data.buckets", (6.0, 3.0), "data.buckets=.*increasing"),
    ("data.buckets", (), "data.buckets=()"),
    ("train.profile_steps", (3, 2), r"profile_steps=\(3, 2\)"),
    ("train.step_boundaries", (0.6, 1.5), "step_boundaries"),
    ("train.frozen", ("audio,video",), r"train.frozen=\('audio,video',\).*--config.train.frozen"),
    ("data.frame_input", "fer", "data.frame_input='fer': expected 'crops' for "
                                "model.video.encoder='cnn'"),
    ("data.crop_size", 48, r"data.crop_size=48: expected model.video.crop_size \(64\)"),
    ("model.frontend.n_bins", 66, "n_bins=66: expected enough frequency bins"),
    ("train.modality_dropout", 1.0, r"modality_dropout=1.0: expected in \[0, 1\)"),
    ("data.face_detector", "dlib", "data.face_detector='dlib': expected one of 'haar', 'mtcnn'"),
    ("data.marker_actor_side", "middle", "marker_actor_side='middle'"),
    ("model.fusion_op", "mfb", "model.fusion_op='mfb': expected one of 'fbp', 'mfh'"),
    ("model.fusion_op", "mutan", "model.fusion_op='mutan': expected 'fbp' unless model.fusion "
                                 "is one of agfbp, amfbp .* set model.fusion='mutan'"),
    ("model.fusion_ops.block.dropout_input", 1.5,
     r"config.model.fusion_ops.block.dropout_input=1.5: expected in \[0, 1\)"),
    ("model.fusion_ops.mcb.mm_dim", 0, "config.model.fusion_ops.mcb.mm_dim=0: expected >= 1"),
])
def test_bad_values_name_the_field_and_the_valid_ones(field, value, match):
    config = tiny_config("gfbp" if field == "model.fusion_op" else "amfbp", **{field: value})
    with pytest.raises(RunSetupError, match=match) as e:
        validate(config)
    assert "\n" not in str(e.value)


def test_the_fcn_needs_67_bins_and_modality_dropout_two_streams():
    validate(tiny_config(**{"model.frontend.n_bins": 67}))  # one frequency row survives
    with pytest.raises(RunSetupError, match="0 for a one-stream model"):
        validate(tiny_config("audio", **{"train.modality_dropout": 0.3}))
    validate(tiny_config("amfbp", **{"train.modality_dropout": 0.3}))
    steps = tiny_config().train.num_steps
    validate(tiny_config(**{"train.modality_dropout": 0.3,
                            "train.modality_dropout_start": steps - 1}))
    with pytest.raises(RunSetupError, match=f"modality_dropout_start={steps}: expected a step "
                                            f"before train.num_steps"):
        validate(tiny_config(**{"train.modality_dropout": 0.3,
                                "train.modality_dropout_start": steps}))


def test_iemocap_test_session_is_a_session():
    config = iemocap_config()
    config.data.test_session = 6
    with pytest.raises(RunSetupError, match=r"data.test_session=6: expected an IEMOCAP session"):
        validate(config)
    config.data.corpus = "folder"  # other corpora carry their splits and ignore it
    validate(config)
