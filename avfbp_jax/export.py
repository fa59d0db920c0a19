"""Export a trained model as a self-describing inference bundle, and load one back.

`export_checkpoint` (the command `avfbp export CHECKPOINT_OR_WORKDIR OUT_DIR`) writes OUT_DIR
(atomically: a temporary folder next to it, renamed when complete):

  bundle.json       format, model config, label names, preprocessing settings, input and output
                    names/shapes/dtypes, platforms, and the versions of the packages that made it
  params/           the parameters as a plain nested dict of numpy arrays, an Orbax checkpoint
                    (`orbax.checkpoint.StandardCheckpointer().restore(path)` reads it back with no
                    code from this package)
  infer.jaxexport   the inference function serialized with jax.export (StableHLO):
                    infer(params, inputs) -> outputs, with `inputs` the dict
                    {audio, audio_len, frames, frame_len, frame_mask} of the batch contract
                    (avfbp_jax/data/__init__.py) and `outputs` {"probs", "logits", plus the model's
                    aux arrays such as "modality_weights"}. The batch size, the audio length and
                    the frame count are symbolic: one function serves every shape (audio padded
                    to at least bundle.json's "min_audio_samples", 1 s; audio_len may be less).

The parameters are an argument of the function, not constants baked into it, so a bundle can be
re-exported with other parameters without touching the function and the function stays small.

`load_exported(DIR)` needs only jax, numpy and orbax: it never imports the model or training
code (this module imports them only inside the functions that export).
"""

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from avfbp_jax import atomic
from avfbp_jax.trees import check_fits
from avfbp_jax.version import __version__

FORMAT = 1
BUNDLE_JSON = "bundle.json"
PARAMS_DIR = "params"
FUNCTION_FILE = "infer.jaxexport"
INPUTS = ("audio", "audio_len", "frames", "frame_len", "frame_mask")
DEFAULT_PLATFORMS = ("cpu", "cuda")
# Leading dimensions of each input: b = batch, s = audio samples, t = frames.
INPUT_DIMS = {"audio": "bs", "audio_len": "b", "frames": "bt", "frame_len": "b",
              "frame_mask": "bt"}
# The exported function takes audio padded to at least this long (clips may be shorter: audio_len
# masks the rest). Symbolic shapes need a lower bound to resolve the front end's and the conv
# stack's length arithmetic; 1 s is below every loader bucket.
MIN_AUDIO_SECONDS = 1.0


# ---------------------------------------------------------------------------------------------
# Export.


def check_model_config(model_cfg: Any) -> None:
    """Raises ValueError naming the first field of model_cfg that this package's model lacks.

    A checkpoint written by another version of the package may carry fields this version does not
    know; exporting it would silently ignore them, so it is refused instead.
    """
    from avfbp_jax.models.config import model_config

    def walk(given: Mapping, known: Mapping, prefix: str) -> None:
        for key, value in given.items():
            name = f"{prefix}{key}"
            if key not in known:
                raise ValueError(f"unknown config field {name!r} (not in avfbp_jax "
                                 f"{__version__}'s model config)")
            if isinstance(known[key], Mapping) != isinstance(value, Mapping):
                raise ValueError(f"config field {name!r} should "
                                 f"{'' if isinstance(known[key], Mapping) else 'not '}be a group")
            if isinstance(value, Mapping):
                walk(value, known[key], name + ".")

    walk(_to_plain(model_cfg), _to_plain(model_config()), "model.")


def export_checkpoint(path: str, out_dir: str, *, labels: Sequence[str] | None = None,
                      platforms: Sequence[str] = DEFAULT_PLATFORMS,
                      overwrite: bool = False) -> dict:
    """Exports a training workdir (its best checkpoint) or one checkpoint step directory.

    Label names come from `labels`, else from the run (WORKDIR/classes.json), else from the
    feature cache it trained on (runs made before the run saved them).
    """
    from avfbp_jax.train.checkpoint import load_classes, load_for_inference

    try:
        params, config = load_for_inference(path)
    except FileNotFoundError:
        raise
    except Exception as e:  # Orbax and tensorstore raise many types for a damaged checkpoint
        problem = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: cannot read the checkpoint ({problem})") from e
    try:
        check_model_config(config.model)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if labels is None:
        labels = load_classes(path) or cache_labels(config)
    return export_bundle(params, config, out_dir, labels=labels, platforms=platforms,
                         overwrite=overwrite)


def cache_labels(config: Any) -> list[str]:
    """The class names of the feature cache a run trained on (config.data.cache_dir)."""
    from avfbp_jax.data.cache import read_index

    try:
        return list(read_index(config.data.cache_dir)["classes"])
    except ValueError as e:
        raise ValueError(f"no label names: {e}; pass --labels") from None


def export_bundle(params: Any, config: Any, out_dir: str, *, labels: Sequence[str],
                  platforms: Sequence[str] = DEFAULT_PLATFORMS,
                  overwrite: bool = False) -> dict:
    """Writes the bundle for `params` of AVModel(config.model) to out_dir; returns its metadata.

    `config` is a full training config (with .model and .data groups); `labels` are the class
    names in label order. The folder appears only once it is complete.

    The function always uses the XLA FBP (model.fbp_impl = "xla", as bundle.json records): it
    computes the same function as the Pallas kernel, and it serializes for every platform, where
    a Pallas (Triton) kernel is a custom call without compatibility guarantees that also needs
    concrete batch sizes.
    """
    from avfbp_jax.models.model import AVModel
    from avfbp_jax.train.environment import package_versions

    check_model_config(config.model)
    if len(labels) != config.model.num_classes:
        raise ValueError(f"{len(labels)} label names for a model with "
                         f"{config.model.num_classes} classes")
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not overwrite:
        raise FileExistsError(f"{out_dir}: already exists (pass --overwrite to replace it)")
    params = jax.tree.map(np.asarray, jax.device_get(params))
    model_cfg = config.model.copy_and_resolve_references()
    with model_cfg.unlocked():
        model_cfg.fbp_impl = "xla"
    model = AVModel(config=model_cfg)
    exported, input_specs = _export_function(model, model_cfg, params, platforms)
    metadata = {
        "format": FORMAT,
        "labels": list(labels),
        "model_config": _to_plain(model_cfg),
        "preprocessing": preprocessing_settings(config),
        "inputs": input_specs,
        "outputs": _output_names(exported),
        "platforms": list(exported.platforms),
        "symbolic_shapes": {"b": "batch size", "s": "audio samples", "t": "frames"},
        "min_audio_samples": min_audio_samples(model_cfg),
        "versions": package_versions(),
    }
    with atomic.directory(out_dir) as tmp:
        _save_params(os.path.join(tmp, PARAMS_DIR), params)
        with open(os.path.join(tmp, FUNCTION_FILE), "wb") as f:
            f.write(exported.serialize())
        with open(os.path.join(tmp, BUNDLE_JSON), "w") as f:
            json.dump(metadata, f, indent=1)
    return metadata


def preprocessing_settings(config: Any) -> dict:
    """What a caller must do to media before the function sees it (and what the function does)."""
    model, data = config.model, config.data
    features = model.video.encoder == "identity"
    return {
        "sample_rate": int(model.frontend.sample_rate),
        "audio": "mono float32 waveform in [-1, 1], zero past audio_len",
        # Computed inside the exported function from the waveform; listed for reference.
        "spectrogram": _to_plain(model.frontend),
        "fps": float(data.fps),
        "crop_size": int(model.video.crop_size),
        "frame_input": "features" if features else "face_crops",
        "face_detector": str(data.face_detector),
        "frames": ("float32 per-frame features [T, D] (the FER port's, of the face crops)"
                   if features else "uint8 grayscale face crops [T, crop_size, crop_size] (as "
                   "`avfbp prepare` cuts them with face_detector)"),
        "frame_mask": "True where the frame is inside frame_len and has a face",
        "buckets_s": [float(b) for b in data.buckets],
    }


def _export_function(model: Any, model_cfg: Any, params: Any,
                     platforms: Sequence[str]) -> tuple[jax.export.Exported, dict]:
    """jax.export of params, inputs -> outputs with symbolic batch, audio and frame lengths;
    also checks that `params` have the shapes the model config gives."""
    from avfbp_jax.models.model import example_batch

    def infer(params: Any, inputs: dict) -> dict:
        logits, aux = model.apply({"params": params}, inputs, train=False)
        logits = logits.astype(jnp.float32)
        return {"probs": jax.nn.softmax(logits, axis=-1), "logits": logits, **aux}

    example = example_batch(model_cfg, 1, 1.0, 2)
    dims = dict(zip("bst", jax.export.symbolic_shape(
        "b, s, t", constraints=(f"s >= {min_audio_samples(model_cfg)}",)), strict=True))
    specs, described = {}, {}
    for name in INPUTS:
        rest = example[name].shape[len(INPUT_DIMS[name]):]
        shape = tuple(dims[d] for d in INPUT_DIMS[name]) + rest
        specs[name] = jax.ShapeDtypeStruct(shape, example[name].dtype)
        described[name] = {"shape": list(INPUT_DIMS[name]) + list(rest),
                           "dtype": str(example[name].dtype)}
    param_specs = jax.eval_shape(
        lambda: model.init({"params": jax.random.key(0)}, example, train=False))["params"]
    check_fits(param_specs, params, "parameters do not fit the model config")
    exported = jax.export.export(jax.jit(infer), platforms=tuple(platforms))(param_specs, specs)
    return exported, described


def min_audio_samples(model_cfg: Any) -> int:
    """The shortest padded audio the exported function takes (MIN_AUDIO_SECONDS)."""
    return int(MIN_AUDIO_SECONDS * model_cfg.frontend.sample_rate)


def _output_names(exported: jax.export.Exported) -> dict:
    """{name: {"shape": [...], "dtype": ...}} of the exported function's outputs."""
    names = jax.tree_util.tree_unflatten(exported.out_tree, range(len(exported.out_avals)))
    return {name: {"shape": [d if isinstance(d, int) else str(d)
                             for d in exported.out_avals[i].shape],
                   "dtype": str(exported.out_avals[i].dtype)} for name, i in names.items()}


def _save_params(path: str, params: Any) -> None:
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, params)
        checkpointer.wait_until_finished()


def _to_plain(value: Any) -> Any:
    """A ConfigDict (or nested dicts/tuples) as plain JSON-able dicts, lists and scalars."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Loading (jax, numpy and orbax only).


def load_exported(directory: str) -> tuple[Callable[[Mapping[str, Any]], dict], dict]:
    """Loads a bundle; returns (infer, metadata).

    infer(batch) takes a dict with at least the keys of metadata["inputs"] (extra keys such as
    "label" are ignored; integer and float inputs are cast to the exported dtypes) and returns a
    dict of arrays: "probs" [B, C], "logits" [B, C] and the model's aux arrays.
    metadata is bundle.json: metadata["labels"] names the classes.
    """
    import orbax.checkpoint as ocp

    path = os.path.join(directory, BUNDLE_JSON)
    try:
        with open(path) as f:
            metadata = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not an export bundle (no {BUNDLE_JSON})") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: bundle format {metadata.get('format')!r}, this loader reads "
                         f"format {FORMAT}")
    with open(os.path.join(directory, FUNCTION_FILE), "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(os.path.abspath(os.path.join(directory, PARAMS_DIR)))
    params = jax.device_put(params)
    call = jax.jit(exported.call)
    dtypes = {name: np.dtype(spec["dtype"]) for name, spec in metadata["inputs"].items()}

    def infer(batch: Mapping[str, Any]) -> dict:
        inputs = {}
        for name, dtype in dtypes.items():
            if name not in batch:
                raise KeyError(f"input {name!r} missing (the bundle takes {sorted(dtypes)})")
            value = jnp.asarray(batch[name])
            if not np.can_cast(value.dtype, dtype, casting="same_kind"):
                raise TypeError(f"input {name!r} has dtype {value.dtype}, the bundle takes "
                                f"{dtype}")
            inputs[name] = value.astype(dtype)
        return call(params, inputs)

    return infer, metadata
