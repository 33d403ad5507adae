"""Identity similarity (CSIM) with dlib's 128-d face-recognition ResNet, offline.

CSIM is the cosine similarity of face-recognition embeddings of two images. The paper computed
it with a face-recognition network of its own choosing; ours is dlib's ResNet
(``dlib_face_recognition_resnet_model_v1.dat``, shipped by ``face_recognition_models``), so
absolute values are not comparable with the paper's Table 1 — only comparisons between methods
measured here are.

dlib's cosines are compressed towards 1. Its own rule is "same person" when the (un-normalised)
descriptors are closer than 0.6 in Euclidean distance; their norms are ~1.4–1.6, so that is a
cosine of about 0.92, and different people score high too (docs/experiments.md#calibrated-constants).
Even an image without a face, aligned on given landmarks, scores high against a real face, which
is why the evaluation measures CSIM on the face dlib *detects* in a generated frame.
"""

from __future__ import annotations

import numpy as np

from talkinghead.errors import TalkingHeadError


class FaceIdentity:
    """Face-recognition embeddings via dlib (detects the face when no landmarks are given)."""

    def __init__(self, detector=None):
        from talkinghead.data.landmarks import import_dlib, dlib_model_dir, get_detector

        dlib = import_dlib()
        path = dlib_model_dir() / "dlib_face_recognition_resnet_model_v1.dat"
        if not path.is_file():
            raise TalkingHeadError(f"{path}: dlib face-recognition model missing")
        self._dlib = dlib
        self._net = dlib.face_recognition_model_v1(str(path))
        self._detector = detector if detector is not None else get_detector("dlib")

    def _shape(self, image: np.ndarray, landmarks: np.ndarray | None):
        """dlib full_object_detection from given (68, 2) landmarks, or from the largest face
        dlib detects; None when there is no face (or the given landmarks are missing)."""
        dlib = self._dlib
        if landmarks is None:
            from talkinghead.data.landmarks import detect_largest_face
            from talkinghead.errors import NoFaceError

            try:
                landmarks, _box, _n = detect_largest_face(image, self._detector)
            except NoFaceError:
                return None
        pts = np.asarray(landmarks, np.float64)
        if pts.shape != (68, 2):
            raise ValueError(f"landmarks must be (68, 2), got {pts.shape}")
        if not np.isfinite(pts).all():
            return None
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0)
        rect = dlib.rectangle(int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1)))
        return dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in pts])

    def embed(self, image: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray | None:
        """(H, W, 3) uint8 RGB → (128,) float32 L2-normalised embedding, or None if no face.

        With ``landmarks`` ((68, 2) pixels) the face is aligned on them and no detector runs;
        without, the largest face dlib's HOG detector finds is used.
        """
        image = np.ascontiguousarray(image, dtype=np.uint8)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got {image.shape}")
        shape = self._shape(image, landmarks)
        if shape is None:
            return None
        v = np.asarray(self._net.compute_face_descriptor(image, shape), np.float32)
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def csim(self, a: np.ndarray, b: np.ndarray, landmarks_a: np.ndarray | None = None,
             landmarks_b: np.ndarray | None = None) -> float:
        """Cosine similarity of the two faces' embeddings (NaN if either has no face)."""
        ea = self.embed(a, landmarks_a)
        if ea is None:
            return float("nan")
        eb = self.embed(b, landmarks_b)
        if eb is None:
            return float("nan")
        return float(np.dot(ea, eb))
