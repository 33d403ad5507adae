"""Identity similarity (CSIM) with dlib's 128-d face-recognition ResNet, offline.

CSIM is the cosine similarity of face-recognition embeddings of two images. The paper computed
it with a face-recognition network of its own choosing; ours is dlib's ResNet (shipped by
``face_recognition_models``), so absolute values are not comparable with the paper's Table 1 —
only comparisons between methods measured here are. For reference, dlib treats descriptors
closer than 0.6 (Euclidean, un-normalised) as the same person.
"""

from __future__ import annotations

import numpy as np

from talkinghead.errors import TalkingHeadError


class FaceIdentity:
    """Face-recognition embeddings via dlib (detects the face when no landmarks are given)."""

    def __init__(self):
        from talkinghead.data.landmarks import _import_dlib, dlib_model_dir, get_detector

        dlib = _import_dlib()
        path = dlib_model_dir() / "dlib_face_recognition_resnet_model_v1.dat"
        if not path.is_file():
            raise TalkingHeadError(f"{path}: dlib face-recognition model missing")
        self._dlib = dlib
        self._net = dlib.face_recognition_model_v1(str(path))
        self._detector = get_detector("dlib")

    def _shape(self, image: np.ndarray, landmarks: np.ndarray | None):
        dlib = self._dlib
        if landmarks is None:
            from talkinghead.data.landmarks import detect_largest_face
            from talkinghead.errors import NoFaceError

            try:
                landmarks, _box, _n = detect_largest_face(image, self._detector)
            except NoFaceError:
                return None
        pts = np.asarray(landmarks, np.float64)
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0)
        rect = dlib.rectangle(int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1)))
        return dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in pts])

    def embed(self, image: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray | None:
        """(H, W, 3) uint8 RGB → (128,) float32 L2-normalised embedding, or None if no face."""
        shape = self._shape(np.ascontiguousarray(image), landmarks)
        if shape is None:
            return None
        v = np.asarray(self._net.compute_face_descriptor(np.ascontiguousarray(image), shape), np.float32)
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def csim(self, a: np.ndarray, b: np.ndarray, landmarks_a: np.ndarray | None = None,
             landmarks_b: np.ndarray | None = None) -> float:
        """Cosine similarity of the two faces' embeddings (NaN if either has no face)."""
        ea, eb = self.embed(a, landmarks_a), self.embed(b, landmarks_b)
        if ea is None or eb is None:
            return float("nan")
        return float(np.dot(ea, eb))
