"""Data: media decoding, the synthetic corpus, corpus readers, the feature cache and the loader.

The model's input is one batch dict of numpy (host) or jax (device) arrays:

  audio       int16   [B, S]        16 kHz mono waveform as PCM (cache.PCM_SCALE), zero past
              or float32 [B, S]     audio_len; or float32 in [-1, 1] (the model converts on
                                    device, so the loader sends int16: half the bytes)
  audio_len   int32   [B]           valid samples
  frames      uint8   [B, T, H, W]  grayscale face crops (video.encoder "cnn" or "fer"), or
              float32 [B, T, D]     per-frame features (video.encoder "identity")
  frame_len   int32   [B]           frames spanning the clip (its duration times the frame rate);
                                    aligns AM-FBP trunks with audio
  frame_mask  bool    [B, T]        True where the frame is inside frame_len AND has a face
  label       int32   [B]
  weight      float32 [B]           1 for real examples, 0 for padding rows of a last batch

Audio and frames span the same time interval, so trunk j of a clip covers audio samples
[j, j+1) * audio_len / N and frames [j, j+1) * frame_len / N.
"""
