"""Shared by the data tests: tiny real media files and a small cache from the real writer.

(Not a conftest.py so that it cannot collide with another owner's conftest in tests/data.)
"""

import os

import numpy as np

from avfbp_jax.data import cache


def write_cache(cache_dir, durations, *, sample_rate=1000, fps=10.0, crop=8, seed=0):
    """One clip per duration (seconds); clip i's audio and frames encode i so tests can find it.

    Audio sample k of clip i is (i + 1) / 1000 (exact through int16 storage); frame t of clip i
    is filled with (i + t) % 256; every third frame has no face.
    """
    rng = np.random.default_rng(seed)
    records = []
    for i, seconds in enumerate(durations):
        samples, frames = round(seconds * sample_rate), max(1, round(seconds * fps))
        audio = np.full(samples, (i + 1) / 1000.0, np.float32)
        crops = ((i + np.arange(frames)) % 256).astype(np.uint8)[:, None, None]
        crops = np.broadcast_to(crops, (frames, crop, crop))
        found = np.arange(frames) % 3 != 2
        clip_id = f"c{i % 3}/clip{i:03d}"
        name = cache.write_clip(str(cache_dir), clip_id, audio, crops, found)
        records.append({"id": clip_id, "label": int(rng.integers(3)), "split": "train",
                        "file": name, "audio_len": samples, "num_frames": frames,
                        "num_faces": int(found.sum())})
    settings = {"sample_rate": sample_rate, "fps": fps, "crop_size": crop}
    cache.write_index(str(cache_dir), ["a", "b", "c"], settings, records,
                      [{"id": "c0/bad", "reason": "test"}])
    return records


def write_tiny_cache(tmp_path):
    """A 50-clip cache with durations spread over 0.5 .. 14 s (past the last default bucket)."""
    durations = np.random.default_rng(1).uniform(0.5, 14.0, size=50).round(1)
    (tmp_path / "clips").mkdir()
    write_cache(tmp_path, durations)
    return str(tmp_path)


def face_image(side=160):
    """A real photograph of a face (scikit-image's astronaut), grayscale, side x side."""
    import cv2
    from skimage import data

    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (side, side), interpolation=cv2.INTER_AREA)


def tone(seconds, sample_rate=16000, freq=220.0):
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_wav(path, seconds, sample_rate=16000, freq=220.0):
    import soundfile

    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(path, tone(seconds, sample_rate, freq), sample_rate, subtype="PCM_16")


def write_video(path, frames, fps=10, audio=None, sample_rate=16000):
    """An MJPEG .avi of uint8 [T, H, W] frames, with a PCM audio track if audio is given."""
    import av

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("mjpeg", rate=fps)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuvj420p"
        if audio is not None:
            sound = container.add_stream("pcm_s16le", rate=sample_rate)
            sound.layout = "mono"
        for f in frames:
            rgb = np.repeat(f[..., None], 3, axis=-1)
            container.mux(video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(video.encode())
        if audio is not None:
            pcm = np.round(audio * 32767).astype(np.int16)[None]
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            frame.sample_rate = sample_rate
            container.mux(sound.encode(frame))
            container.mux(sound.encode())


def face_frames(seconds, fps=10, side=160, every=1):
    """seconds * fps frames of the face photograph; with every=k only every k-th has the face."""
    n = round(seconds * fps)
    frames = np.full((n, side, side), 128, np.uint8)
    frames[::every] = face_image(side)
    return frames


EMO_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
EMO_DETAIL = ("C-E2:\tNeutral;\t()\nC-E3:\tNeutral;\t()\nC-F1:\tNeutral;\t(curious)\n"
              "A-E3:\tval 3; act 2; dom  2;\t()\nA-F1:\tval 3; act 2; dom  1;\t()\n\n")


def write_iemocap(root, dialogs, *, dialog_frames):
    """An IEMOCAP release replica. dialogs: {dialog id: [(start, end, utterance id, code)]}.

    Writes SessionN/dialog/EmoEvaluation/<dialog>.txt in the release's format (with the
    per-evaluator lines and the Attribute/Categorical subfolders), one wav per utterance of its
    length under SessionN/sentences/wav/<dialog>/, and SessionN/dialog/avi/DivX/<dialog>.avi
    from dialog_frames (uint8 [T, H, W] at 10 fps).
    """
    for dialog, turns in dialogs.items():
        session = os.path.join(root, f"Session{int(dialog[3:5])}")
        emo = os.path.join(session, "dialog", "EmoEvaluation")
        for sub in ("Attribute", "Categorical", "Self-evaluation"):
            os.makedirs(os.path.join(emo, sub), exist_ok=True)
        with open(os.path.join(emo, "Categorical", f"{dialog}_e1_cat.txt"), "w") as f:
            f.write(f"{turns[0][2]} :Neutral state; ()\n")
        with open(os.path.join(emo, f"{dialog}.txt"), "w") as f:
            f.write(EMO_HEADER)
            for start, end, utt, code in turns:
                f.write(f"[{start:.4f} - {end:.4f}]\t{utt}\t{code}\t[2.5000, 2.5000, 2.5000]\n")
                f.write(EMO_DETAIL)
                write_wav(os.path.join(session, "sentences", "wav", dialog, f"{utt}.wav"),
                          end - start)
        write_video(os.path.join(session, "dialog", "avi", "DivX", f"{dialog}.avi"),
                    dialog_frames)


def write_afew(root, videos, *, frames, seconds=1.0):
    """An AFEW replica: videos = [(folder, emotion, stem)], each an avi with an audio track."""
    for folder, emotion, stem in videos:
        write_video(os.path.join(root, folder, emotion, f"{stem}.avi"), frames,
                    audio=tone(seconds))
