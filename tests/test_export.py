"""Export bundles: contents, the serialized function in a process without avfbp_jax, errors."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from avfbp_jax import export
from avfbp_jax.commands import cli
from avfbp_jax.data.cache import write_index
from avfbp_jax.data.config import data_config
from avfbp_jax.models.config import FUSION_OPS
from avfbp_jax.models.model import AVModel, example_batch
from avfbp_jax.train.checkpoint import Checkpointer, save_config
from avfbp_jax.train.config import train_config
from avfbp_jax.train.optimizer import make_optimizer
from avfbp_jax.train.state import TrainState
from tests.train.conftest import tiny_model_config

LABELS = ("neutral", "happy", "angry", "sad")


def tiny_config(fusion: str = "amfbp") -> ml_collections.ConfigDict:
    """A full config (model + data) small enough to init, export and run in seconds on CPU."""
    config = ml_collections.ConfigDict()
    config.model = tiny_model_config(fusion)
    config.data = data_config()
    return config


def random_batch(cfg, batch_size: int, seconds: float, num_frames: int, seed: int) -> dict:
    """A batch per the contract with random audio/frames and ragged valid lengths."""
    rng = np.random.default_rng(seed)
    batch = example_batch(cfg, batch_size, seconds, num_frames)
    samples = batch["audio"].shape[1]
    audio_len = rng.integers(samples // 2, samples + 1, batch_size).astype(np.int32)
    audio = rng.uniform(-0.5, 0.5, batch["audio"].shape).astype(np.float32)
    audio[np.arange(samples)[None] >= audio_len[:, None]] = 0.0
    frame_len = rng.integers(num_frames // 2, num_frames + 1, batch_size).astype(np.int32)
    frame_mask = (np.arange(num_frames)[None] < frame_len[:, None]) & (
        rng.uniform(size=(batch_size, num_frames)) > 0.2)
    frames = rng.integers(0, 256, batch["frames"].shape).astype(batch["frames"].dtype)
    return {"audio": audio, "audio_len": audio_len, "frames": frames, "frame_len": frame_len,
            "frame_mask": frame_mask}


def reference(cfg, params, batch) -> dict:
    """The package's own model on batch: probabilities and logits."""
    logits, aux = jax.jit(lambda p, b: AVModel(config=cfg).apply({"params": p}, b))(params, batch)
    return {"logits": np.asarray(logits), "probs": np.asarray(jax.nn.softmax(logits)),
            **{k: np.asarray(v) for k, v in aux.items()}}


def init_params(model_cfg, seed: int = 0) -> dict:
    batch = example_batch(model_cfg, 1, 1.0, 10)  # parameter shapes do not depend on lengths
    init = jax.jit(lambda key: AVModel(config=model_cfg).init({"params": key}, batch)["params"])
    return jax.device_get(init(jax.random.key(seed)))


def write_workdir(workdir: str, config, params, step: int = 3) -> None:
    """A training workdir written with the training code's own config and checkpoint API."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.train = train_config()
    config.seed = 0
    save_config(workdir, config)
    tx = make_optimizer(config.train)
    state = TrainState(step=np.int32(step), params=params, opt_state=tx.init(params))
    checkpointer = Checkpointer(workdir, async_save=False)
    checkpointer.save(step, state, {"epoch": 0, "step": step}, {"val/ua": 0.5, "val/wa": 0.5})
    checkpointer.wait()
    checkpointer.close()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config, params, workdir) of a tiny AM-FBP model checkpointed as a training run would,
    on a (clip-less) feature cache that names the classes."""
    root = tmp_path_factory.mktemp("run")
    config = tiny_config()
    config.data.cache_dir = str(root / "cache")
    os.makedirs(config.data.cache_dir)
    write_index(config.data.cache_dir, LABELS, {}, [], [])
    params = init_params(config.model)
    workdir = str(root / "workdir")
    write_workdir(workdir, config, params)
    return config, params, workdir


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory):
    """(config, params, bundle_dir): the tiny run exported by the `avfbp export` command."""
    config, params, workdir = trained
    out = str(tmp_path_factory.mktemp("export") / "bundle")
    assert cli.main(["export", workdir, out]) == 0
    return config, params, out


def test_bundle_describes_itself(bundle):
    config, params, out = bundle
    assert sorted(os.listdir(out)) == ["bundle.json", "infer.jaxexport", "params"]
    with open(os.path.join(out, "bundle.json")) as f:
        meta = json.load(f)
    assert meta["format"] == export.FORMAT
    assert meta["labels"] == list(LABELS)
    assert meta["model_config"] == json.loads(json.dumps(config.model.to_dict()))
    pre = meta["preprocessing"]
    assert (pre["sample_rate"], pre["fps"], pre["crop_size"]) == (16000, 10.0, 64)
    assert pre["frame_input"] == "face_crops"
    assert pre["spectrogram"]["hop_length"] == 160
    assert meta["inputs"]["audio"] == {"shape": ["b", "s"], "dtype": "float32"}
    assert meta["inputs"]["frames"] == {"shape": ["b", "t", 64, 64], "dtype": "uint8"}
    assert meta["outputs"]["probs"] == {"shape": ["b", 4], "dtype": "float32"}
    assert meta["platforms"] == ["cpu", "cuda"]
    assert meta["min_audio_samples"] == 16000
    for package in ("avfbp_jax", "jax", "jaxlib", "flax", "orbax-checkpoint"):
        assert meta["versions"][package]
    # Plain Orbax restores the parameters as nested dicts of numpy arrays, equal to the originals.
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(os.path.join(out, "params"))
    assert jax.tree.structure(restored) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(params), strict=True):
        assert isinstance(a, np.ndarray)
        np.testing.assert_array_equal(a, np.asarray(b))


# Runs in a fresh interpreter: jax, numpy and orbax only.
STANDALONE = textwrap.dedent("""
    import json, os, sys
    import jax, numpy as np
    import orbax.checkpoint as ocp

    bundle, data = sys.argv[1], sys.argv[2]
    meta = json.load(open(os.path.join(bundle, "bundle.json")))
    exported = jax.export.deserialize(bytearray(open(os.path.join(bundle, "infer.jaxexport"),
                                                     "rb").read()))
    with ocp.StandardCheckpointer() as c:
        params = c.restore(os.path.join(bundle, "params"))
    inputs = np.load(data)
    results = {}
    for case in sorted({k.split("/")[0] for k in inputs.files}):
        batch = {name: inputs[f"{case}/{name}"] for name in meta["inputs"]}
        out = exported.call(params, batch)
        results.update({f"{case}/{k}": np.asarray(v) for k, v in out.items()})
    np.savez(data.replace(".npz", "_out.npz"), **results)
    assert "avfbp_jax" not in sys.modules, "the standalone run imported avfbp_jax"
    assert "flax" not in sys.modules, "the standalone run imported flax"
    print("ok", sorted(results))
""")


def test_serialized_function_runs_without_the_package(bundle, tmp_path):
    config, params, out = bundle
    # Two batch sizes, and different audio lengths and frame counts (symbolic s and t).
    cases = {"b2": random_batch(config.model, 2, 1.0, 10, seed=1),
             "b5": random_batch(config.model, 5, 3.3, 34, seed=2)}
    data = str(tmp_path / "inputs.npz")
    np.savez(data, **{f"{c}/{k}": v for c, b in cases.items() for k, v in b.items()})
    script = tmp_path / "standalone.py"
    script.write_text(STANDALONE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(script), out, data], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(str(tmp_path / "inputs_out.npz"))
    for case, batch in cases.items():
        want = reference(config.model, params, batch)
        assert got[f"{case}/probs"].shape == (len(batch["audio"]), 4)
        for name in ("probs", "logits", "modality_weights"):
            np.testing.assert_allclose(got[f"{case}/{name}"], want[name], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got[f"{case}/probs"].sum(-1), 1.0, rtol=1e-6)


# Downstream use through the package's loader: it must not import model or training code.
LOADER = textwrap.dedent("""
    import sys
    import numpy as np
    import avfbp_jax

    infer, meta = avfbp_jax.load_exported(sys.argv[1])
    inputs = np.load(sys.argv[2])
    batch = {k: inputs[k] for k in inputs.files}
    batch["audio_len"] = batch["audio_len"].astype(np.int64)  # cast to the exported int32
    out = infer(batch)
    np.savez(sys.argv[3], **{k: np.asarray(v) for k, v in out.items()})
    heavy = sorted(m for m in sys.modules if m.split(".")[0] == "flax"
                   or m.startswith(("avfbp_jax.train", "avfbp_jax.models", "avfbp_jax.data")))
    assert not heavy, heavy
    print(meta["labels"])
""")


def test_load_exported_runs_without_model_code(bundle, tmp_path):
    config, params, out = bundle
    batch = random_batch(config.model, 3, 2.5, 25, seed=3)
    np.savez(str(tmp_path / "in.npz"), **batch, label=np.zeros(3, np.int32))
    script = tmp_path / "loader.py"
    script.write_text(LOADER)
    proc = subprocess.run([sys.executable, str(script), out, str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz")], cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(list(LABELS))
    got, want = np.load(str(tmp_path / "out.npz")), reference(config.model, params, batch)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)


def test_load_exported_rejects_bad_inputs(bundle):
    config, _, out = bundle
    infer, meta = export.load_exported(out)
    batch = random_batch(config.model, 2, 2.0, 20, seed=4)
    with pytest.raises(KeyError, match="frame_mask"):
        infer({k: v for k, v in batch.items() if k != "frame_mask"})
    with pytest.raises(TypeError, match="frames.*float32.*uint8"):
        infer(batch | {"frames": batch["frames"].astype(np.float32)})
    with pytest.raises(FileNotFoundError, match="not an export bundle"):
        export.load_exported(os.path.dirname(out))


def export_error(capsys, *argv) -> str:
    """Runs `avfbp export argv...`, expects failure, returns its one stderr line."""
    assert cli.main(["export", *argv]) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("avfbp export: error: "), lines
    return lines[0]


def edited_copy(workdir: str, dest: str, section: str, key: str, value) -> str:
    """A copy of workdir whose config.json has config[section][key] = value."""
    shutil.copytree(workdir, dest)
    with open(os.path.join(dest, "config.json")) as f:
        saved = json.load(f)
    saved[section][key] = value
    with open(os.path.join(dest, "config.json"), "w") as f:
        json.dump(saved, f)
    return dest


def test_export_errors(trained, bundle, tmp_path, capsys):
    config, params, workdir = trained
    out = str(tmp_path / "out")
    empty = str(tmp_path / "empty")
    save_config(empty, config)
    assert "no checkpoint" in export_error(capsys, empty, out)
    assert "neither a workdir" in export_error(capsys, str(tmp_path), out)

    corrupt = str(tmp_path / "corrupt")
    shutil.copytree(workdir, corrupt)
    for root, _, names in os.walk(os.path.join(corrupt, "checkpoints", "3", "state")):
        for name in names:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"\x00garbage")
    assert "cannot read the checkpoint" in export_error(capsys, corrupt, out)

    audio = dict(config.model.audio.to_dict(), dilation=2)
    unknown = edited_copy(workdir, str(tmp_path / "unknown"), "model", "audio", audio)
    assert "unknown config field 'model.audio.dilation'" in export_error(capsys, unknown, out)

    no_cache = edited_copy(workdir, str(tmp_path / "no_cache"), "data", "cache_dir",
                           str(tmp_path / "gone"))
    assert "no label names" in export_error(capsys, no_cache, out)
    assert "3 label names for a model with 4 classes" in export_error(
        capsys, no_cache, out, "--labels", "a,b,c")

    assert "already exists" in export_error(capsys, workdir, bundle[2])
    assert not os.path.exists(out)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]


def test_params_must_fit_the_config(trained, tmp_path):
    config, params, _ = trained
    wider = ml_collections.ConfigDict(config.to_dict())
    wider.model.fbp_o = 16
    with pytest.raises(ValueError, match=r"do not fit the model config: \['fusion'\].*\['b_x'\] "
                                         r"is float32\[16\] here, float32\[32\] wanted"):
        export.export_bundle(params, wider, str(tmp_path / "out"), labels=LABELS)
    assert os.listdir(tmp_path) == []


def test_labels_option(trained, tmp_path):
    _, _, workdir = trained
    out = str(tmp_path / "bundle")
    assert cli.main(["export", workdir, out, "--labels", "w,x,y,z", "--platforms", "cpu"]) == 0
    with open(os.path.join(out, "bundle.json")) as f:
        meta = json.load(f)
    assert meta["labels"] == ["w", "x", "y", "z"] and meta["platforms"] == ["cpu"]


def test_failed_export_leaves_nothing(trained, tmp_path, monkeypatch):
    config, params, _ = trained

    def fail(path, params):
        os.makedirs(path)
        raise OSError("disk full")

    monkeypatch.setattr(export, "_save_params", fail)
    with pytest.raises(OSError, match="disk full"):
        export.export_bundle(params, config, str(tmp_path / "out"), labels=LABELS)
    assert os.listdir(tmp_path) == []


def test_ctrl_c_during_export_leaves_the_old_bundle_and_one_line(trained, bundle, tmp_path,
                                                                  monkeypatch, capsys):
    """SIGINT once the new parameters are written: status 130, one line, the bundle that was
    there is untouched and no temporary folder is left."""
    _, _, workdir = trained
    _, _, existing = bundle
    out = tmp_path / "bundle"
    shutil.copytree(existing, out)
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    real = export._save_params

    def ctrl_c_after_saving(path, params):
        real(path, params)
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(export, "_save_params", ctrl_c_after_saving)
    capsys.readouterr()
    assert cli.main(["export", workdir, str(out), "--overwrite"]) == 130
    assert capsys.readouterr().err == "avfbp export: interrupted by SIGINT\n"
    assert os.listdir(tmp_path) == ["bundle"]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before


@pytest.mark.parametrize("fusion, encoder", [("audio", "cnn"), ("gfbp", "identity")])
def test_other_model_kinds(fusion, encoder, tmp_path):
    """An audio-only model (frames unused) and per-frame feature input export and match too."""
    config = tiny_config(fusion)
    config.model.video.encoder = encoder
    params = init_params(config.model)
    metadata = export.export_bundle(params, config, str(tmp_path / "b"), labels=LABELS,
                                    platforms=("cpu",))
    frames = metadata["inputs"]["frames"]
    assert frames == ({"shape": ["b", "t", 8], "dtype": "float32"} if encoder == "identity" else
                      {"shape": ["b", "t", 64, 64], "dtype": "uint8"})
    assert metadata["preprocessing"]["frame_input"] == (
        "features" if encoder == "identity" else "face_crops")
    infer, _ = export.load_exported(str(tmp_path / "b"))
    batch = random_batch(config.model, 3, 1.5, 15, seed=5)
    got, want = infer(batch), reference(config.model, params, batch)
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fusion, op", [(m, "fbp") for m in FUSION_OPS[1:]] + [("amfbp", "mcb")])
def test_every_fusion_family_member_exports(fusion, op, tmp_path):
    """Each member as the global head (and MCB, with its fixed sketches, in the AM wrapper)
    exports, and the exported function computes what the model does."""
    config = tiny_config(fusion)
    config.model.fusion_op = op
    config.model.video.encoder = "identity"
    params = init_params(config.model)
    export.export_bundle(params, config, str(tmp_path / "b"), labels=LABELS, platforms=("cpu",))
    infer, _ = export.load_exported(str(tmp_path / "b"))
    batch = random_batch(config.model, 3, 1.5, 15, seed=6)
    got, want = infer(batch), reference(config.model, params, batch)
    assert np.abs(want["logits"][0] - want["logits"][1]).max() > 1e-4
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)


def test_pallas_trained_model_exports_with_the_xla_fbp(tmp_path):
    """model.fbp_impl = "pallas" exports (for CPU and CUDA) with the portable XLA FBP, which
    computes what the Pallas model computes."""
    config = tiny_config("gfbp")
    config.model.video.encoder = "identity"
    config.model.fbp_impl = "pallas"
    params = init_params(config.model)
    metadata = export.export_bundle(params, config, str(tmp_path / "b"), labels=LABELS)
    assert metadata["model_config"]["fbp_impl"] == "xla"
    assert metadata["platforms"] == ["cpu", "cuda"]
    assert config.model.fbp_impl == "pallas"  # the caller's config is left as it was
    infer, _ = export.load_exported(str(tmp_path / "b"))
    batch = random_batch(config.model, 3, 1.5, 15, seed=5)
    got, want = infer(batch), reference(config.model, params, batch)  # Pallas, interpret mode
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)
