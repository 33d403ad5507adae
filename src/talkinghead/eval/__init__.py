"""Evaluation of talking-head models (issue 5).

* :mod:`talkinghead.eval.metrics` — SSIM, PSNR (skimage's definitions), NME, landmarks and
  face-detection rate on generated frames.
* :mod:`talkinghead.eval.identity` — CSIM with dlib's face-recognition ResNet (offline).
* :mod:`talkinghead.eval.fid` — FID, only with standard Inception weights already on disk.
* :mod:`talkinghead.eval.splits` — identity splits (bundled ``faces`` split, or a file).
* :mod:`talkinghead.eval.protocol`, :mod:`talkinghead.eval.report` — the evaluation protocol
  and its report.

Submodules are imported on demand (dlib and scikit-image are slow to import).
"""
