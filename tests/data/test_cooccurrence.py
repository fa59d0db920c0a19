"""The co-occurrence task: labels follow overlap by construction, each stream alone carries no
label information, events straddle trunk boundaries, and the ceilings the module states hold."""

import collections
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from avfbp_jax.commands import cli
from avfbp_jax.data import cooccurrence, synth_media, synthetic
from avfbp_jax.train.experiment import load_config_file

CLASSES = cooccurrence.CLASSES
DRAWS = 4000  # clips per overlap class in the statistical tests (clip_info only: no media)
OVERLAP = {"apart": "apart-high-smile", "together": "together-high-smile"}  # the timing depends
# on the overlap factor only (checked below)


@pytest.fixture(scope="module")
def infos():
    return {k: [cooccurrence.clip_info(0, i, name) for i in range(DRAWS)]
            for k, name in OVERLAP.items()}


def test_classes_cross_overlap_voice_and_face():
    assert len(CLASSES) == 8 and len(set(CLASSES)) == 8
    for name in CLASSES:
        overlap, voice, face = name.split("-")
        assert cooccurrence.CLASS_FACTORS[name] == (
            overlap == "together", cooccurrence.VOICES[voice], cooccurrence.FACES[face])
        for i in range(50):  # the same draws whatever the voice and the face
            assert cooccurrence.clip_info(0, i, name) == cooccurrence.clip_info(
                0, i, OVERLAP[overlap])


def _shares(info):
    """(audio start, video start) as shares of where an event may start, event length, duration."""
    d = info["duration"]
    (a0, a1), (v0, _) = info["audio_event"], info["video_event"]
    length = (a1 - a0) / d
    return a0 / d / (1 - length), v0 / d / (1 - length), length, d


def test_the_label_is_whether_the_events_overlap(infos):
    for name, together in (("apart", False), ("together", True)):
        for info in infos[name]:
            d = info["duration"]
            (a0, a1), (v0, v1) = info["audio_event"], info["video_event"]
            length = a1 - a0
            assert v1 - v0 == pytest.approx(length, abs=2e-3)
            overlap = min(a1, v1) - max(a0, v0)
            if together:  # by at least half the event length
                assert overlap >= 0.5 * length - 2e-3
            else:  # separated by at least 5% of the clip
                assert -overlap >= 0.05 * d - 2e-3
            assert 0 <= min(a0, v0) and max(a1, v1) <= d + 1e-3


def test_durations_and_event_lengths_vary(infos):
    durations = np.array([i["duration"] for i in infos["apart"]])
    assert durations.min() < 4.6 and durations.max() > 5.9 and len(set(durations)) > 100
    lengths = np.array([_shares(i)[2] for i in infos["apart"]])
    assert lengths.min() < 0.16 and lengths.max() > 0.24


def test_each_stream_alone_is_the_same_under_both_classes(infos):
    # The audio event's draws do not depend on the class: the same clip index gives the same
    # audio event (and duration) whichever class it is given.
    for apart, together in zip(infos["apart"], infos["together"], strict=True):
        assert apart["duration"] == together["duration"]
        assert apart["audio_event"] == together["audio_event"]
        assert apart["intensity"] == together["intensity"]
    # The facial event's position is uniform under both classes, and independent of the event
    # length and the duration: compare its distribution between the classes.
    shares = {name: np.array([_shares(i) for i in infos[name]]) for name in OVERLAP}
    for column in (0, 1):  # audio start, video start
        a, b = np.sort(shares["apart"][:, column]), np.sort(shares["together"][:, column])
        grid = np.linspace(0, 1, 101)
        ks = np.abs(np.searchsorted(a, grid) - np.searchsorted(b, grid)).max() / DRAWS
        assert ks < 0.04  # two-sample KS at 4000 + 4000 draws: p ~ 0.003
        for c in (a, b):
            assert np.histogram(c, 10, (0, 1))[0].min() > 0.085 * DRAWS  # uniform
    for name in OVERLAP:
        video_at, length, duration = shares[name][:, 1:].T
        assert abs(np.corrcoef(video_at, length)[0, 1]) < 0.05
        assert abs(np.corrcoef(video_at, duration)[0, 1]) < 0.05


def _touches(event, duration, trunks):
    j = np.arange(trunks)
    return (event[0] / duration < (j + 1) / trunks) & (event[1] / duration > j / trunks)


# Per trunk count, at least: the share of events straddling a boundary, of apart pairs touching
# a same trunk, of together pairs overlapping in two trunks or more (measured: 0.25 0.49 0.19,
# 0.51 0.34 0.38, 0.93 0.14 0.76).
SHORTCUT_FREE = {2: (0.2, 0.4, 0.15), 3: (0.45, 0.3, 0.3), 5: (0.85, 0.1, 0.7)}


@pytest.mark.parametrize("trunks", sorted(SHORTCUT_FREE))
def test_trunk_boundaries_are_no_shortcut(infos, trunks):
    """Events straddle trunk boundaries, apart events often share a trunk, and together events
    often overlap across a boundary."""
    straddles, shares, splits = SHORTCUT_FREE[trunks]
    for name in OVERLAP:
        touched = [[_touches(i[k], i["duration"], trunks) for k in ("audio_event", "video_event")]
                   for i in infos[name]]
        assert np.mean([a.sum() > 1 for a, _ in touched]) > straddles
        assert np.mean([v.sum() > 1 for _, v in touched]) > straddles
        shared = np.mean([(a & v).any() for a, v in touched])
        if name == "apart":
            assert shared > shares
        else:
            assert shared == 1.0 and np.mean([(a & v).sum() > 1 for a, v in touched]) > splits


def _occupancy_ceiling(infos, trunks):
    """Bayes accuracy of a head that knows, per trunk, whether each event touches it."""
    counts = collections.defaultdict(lambda: [0, 0])
    for label, name in enumerate(OVERLAP):
        for info in infos[name]:
            a = _touches(info["audio_event"], info["duration"], trunks)
            v = _touches(info["video_event"], info["duration"], trunks)
            counts[((a & v).sum(), (a & ~v).sum(), (~a & v).sum())][label] += 1
    return sum(max(c) for c in counts.values()) / (len(OVERLAP) * DRAWS)


def test_the_ceilings_the_docstring_states(infos):
    stated = {1: 0.5, 2: 0.937, 3: 0.995, 5: 0.959}
    for trunks, ceiling in stated.items():
        assert _occupancy_ceiling(infos, trunks) == pytest.approx(ceiling, abs=0.015), trunks


def test_each_stream_shows_only_its_own_factors():
    clip = {name: cooccurrence.generate_clip(2, 9, name) for name in (
        "apart-high-smile", "together-high-smile", "apart-low-smile", "apart-high-frown")}
    audio_a, frames_a, info = clip["apart-high-smile"]
    audio_t, frames_t, _ = clip["together-high-smile"]
    np.testing.assert_array_equal(audio_a, audio_t)  # the audio does not know the overlap
    assert not np.array_equal(frames_a, frames_t)  # the smile moved
    np.testing.assert_array_equal(frames_a, clip["apart-low-smile"][1])  # nor the face the voice
    assert not np.array_equal(audio_a, clip["apart-low-smile"][0])
    np.testing.assert_array_equal(audio_a, clip["apart-high-frown"][0])  # nor the voice the face
    assert not np.array_equal(frames_a, clip["apart-high-frown"][1])
    assert info == cooccurrence.clip_info(2, 9, "apart-high-smile")
    assert len(audio_a) == round(info["duration"] * synth_media.SAMPLE_RATE)
    assert len(frames_a) == len(synth_media.frame_times(info["duration"]))
    # The mouth opens with the syllable envelope; with the task's cues the audio event does not
    # change it (rate_gain 0), so the frames cannot show when the burst happened.
    n = 3 * synth_media.SAMPLE_RATE
    burst = synth_media.segment_weight(np.arange(n) / synth_media.SAMPLE_RATE, 1.0, 2.0)
    calm, high, low = (synth_media.synth_audio(np.random.default_rng(4), 3.0, w * burst,
                                               cooccurrence.CUES)
                       for w in (0.0, *cooccurrence.VOICES.values()))
    for voice in (high, low):
        np.testing.assert_array_equal(calm[1], voice[1])
        assert not np.array_equal(calm[0], voice[0])


def test_cues_that_would_let_apart_events_overlap_are_refused(tmp_path):
    cues = dataclasses.replace(cooccurrence.CUES, segment_fraction=(0.2, 0.3))
    with pytest.raises(ValueError, match="event lengths"):
        synthetic.write_corpus(tmp_path / "c", clips=4, cues=cues, task="cooccurrence")
    assert not (tmp_path / "c").exists()  # refused before anything was written


def test_cli_writes_a_cooccurrence_corpus(tmp_path, capsys):
    out = tmp_path / "c"
    argv = ["synth", str(out), "--task", "cooccurrence", "--clips", "4", "--seed", "1",
            "--min-seconds", "1.5", "--max-seconds", "1.6", "--workers", "1"]
    assert cli.main(argv) == 0
    meta = json.loads((out / "corpus.json").read_text())
    assert meta["task"] == "cooccurrence" and meta["classes"] == list(CLASSES)
    assert meta["cues"]["min_seconds"] == 1.5 and meta["cues"]["rate_gain"] == 0.0
    assert list(meta["clip_info"]) == [f"{name}/clip{i:05d}" for i, name in enumerate(CLASSES[:4])]
    assert all((out / f"{clip}.avi").is_file() for clip in meta["clip_info"])
    assert f"wrote 4 clips ({', '.join(CLASSES)})" in capsys.readouterr().out
    # The emotion task's command on this folder is refused, naming the task.
    assert cli.main(["synth", str(out), "--clips", "4", "--seed", "1"]) == 2
    assert "task 'cooccurrence' -> 'emotion'" in capsys.readouterr().err
    assert cli.main([*argv[:2], "--task", "cooccurrence", "--classes", "happy,sad"]) == 2
    assert "2+ distinct names from ['apart-high-frown'," in capsys.readouterr().err


def test_experiment_variants():
    path = str(Path(__file__).parents[2] / "experiments" / "cooccurrence.py")
    fusions = {}
    for variant in ("audio", "video", "concat", "late", "gfbp", "agfbp", "amfbp", "amfbp-t1",
                    "amfbp-t2", "amfbp-t3", "amfbp-t5"):
        c = load_config_file(f"{path}:{variant}")
        fusions[variant] = (c.model.fusion, c.model.num_trunks)
        assert c.data.synthetic.task == "cooccurrence" and c.model.num_classes == 8
        assert c.data.corpus_dir == "runs/data/cooccurrence"
        assert c.train.init_from == "runs/cooc/streams-s0" and c.train.num_steps == 300
    assert fusions["gfbp"][0] == "gfbp" and fusions["amfbp"] == ("amfbp", 3)
    assert [fusions[f"amfbp-t{n}"] for n in (1, 2, 3, 5)] == [("amfbp", n) for n in (1, 2, 3, 5)]
    streams = load_config_file(f"{path}:streams")
    assert streams.model.fusion == "late" and not streams.train.init_from
    with pytest.raises(ValueError, match="unknown variant 'amfbp-t4'") as refused:
        load_config_file(f"{path}:amfbp-t4")
    assert "\n" not in str(refused.value)
