"""Default data configuration: which corpus, where its cache lives, and how clips are batched."""

import ml_collections

CORPUS_KINDS = ("folder", "iemocap", "afew")
MARKER_ACTOR_SIDES = ("", "left", "right", "auto")
FACE_DETECTORS = ("haar", "mtcnn")  # data.faces.make_detector
DEFAULT_BUCKETS = (2.0, 3.0, 4.0, 6.0, 8.0, 12.0)  # seconds (chosen)


def data_config() -> ml_collections.ConfigDict:
    """Returns the data defaults: the synthetic corpus laid out as a folder corpus."""
    c = ml_collections.ConfigDict()
    c.corpus = "folder"  # one of CORPUS_KINDS; `avfbp synth` writes a folder corpus
    c.corpus_dir = ""  # the corpus root, as given to `avfbp prepare`
    c.cache_dir = ""  # the feature cache written by `avfbp prepare`

    # Preprocessing (prepare writes these into the cache; the loader reads them back from it).
    c.sample_rate = 16000
    c.fps = 10.0  # face crops per second (chosen)
    c.crop_size = 64  # grayscale face crop side (chosen)
    c.excited_as_happy = True  # IEMOCAP: merge "exc" into "happy" (the usual 4-class setup)
    # IEMOCAP's dialog videos show both actors side by side. "left"/"right": the side where the
    # actor named in the dialog id (Ses01F -> F) sits; faces are then searched only in the
    # speaking actor's half. "auto": decided per clip, the half whose face's mouth moves with the
    # speech (data/speaking_side.py). "" = the whole frame (the largest face wins).
    c.marker_actor_side = ""  # one of MARKER_ACTOR_SIDES
    # Face detector, one of FACE_DETECTORS: "haar" (OpenCV's frontal cascade, nothing
    # to convert) or "mtcnn" (the JAX MTCNN port: profile, small and cut-off faces too; convert its
    # weights once with `python3 -m avfbp_jax.commands.mtcnn_convert`).
    c.face_detector = "haar"
    c.workers = 2  # prepare: processes decoding clips in parallel
    # What the loader feeds the video stream as frames: "crops" (uint8 face crops, for the
    # video encoders "cnn" and "fer") or "fer" (the FER port's per-frame features stored by
    # `avfbp prepare --fer-features`, for video.encoder "identity").
    c.frame_input = "crops"

    # Splits. Folder and AFEW corpora carry a split per clip ("train"/"val"/"test"): a folder
    # corpus from its splits.csv, else a per-class split seeded by split_seed. IEMOCAP is split
    # by session (corpora.split_indices): test_session k trains on the other four sessions and
    # validates and tests on session k (1..5 are the leave-one-session-out folds, 5 the usual
    # hold-out).
    c.train_split = "train"
    c.val_split = "val"
    c.test_session = 5
    c.split_seed = 0

    # Loader. A clip goes to the shortest bucket at least as long as it (longer clips are cut to
    # the last bucket); each bucket is one compiled shape: seconds * sample_rate audio samples
    # and ceil(seconds * fps) frames.
    c.buckets = DEFAULT_BUCKETS
    c.prefetch = 2  # batches assembled ahead of the training step
    c.loader_threads = 2  # threads assembling batches (numpy copies release the GIL)
    c.in_memory = True  # read the packed cache into host memory at start; False: memory-map it
    return c
