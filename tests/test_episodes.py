import numpy as np
import pytest
import torch

from talkinghead.data.episodes import EpisodeDataset, EpisodeSampler, VideoIndex, load_videos
from talkinghead.data.landmarks import MIRROR_68
from talkinghead.data.sketch import landmarks_to_sketch
from talkinghead.data.store import ClipReader, load_index
from talkinghead.errors import TalkingHeadError


def test_episode_shapes_and_distinct_frames(synthetic_dataset):
    ds = EpisodeDataset(synthetic_dataset, shots=3, size=64)
    assert len(ds) == 3
    item = ds[(0, 1)]
    assert item["frames"].shape == (3, 3, 64, 64)
    assert item["sketches"].shape == (3, 3, 64, 64)
    assert item["target"].shape == (3, 64, 64)
    assert item["target_landmarks"].shape == (68, 2)
    assert item["video_index"] == 1
    # K + 1 distinct frames: no two images identical
    stack = torch.cat([item["frames"], item["target"][None]])
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.equal(stack[i], stack[j])
    # Images travel as uint8 (4× less shared memory than float32); the trainer normalises them.
    assert item["frames"].dtype == item["target"].dtype == item["sketches"].dtype == torch.uint8


def test_episode_sketch_matches_landmarks(synthetic_dataset):
    ds = EpisodeDataset(synthetic_dataset, shots=2, size=64)
    item = ds[(0, 0)]
    expected = landmarks_to_sketch(item["target_landmarks"].numpy(), 64)
    got = item["target_sketch"].permute(1, 2, 0).numpy()
    assert np.array_equal(got, expected)


def test_episodes_deterministic_and_epoch_dependent(synthetic_dataset):
    a = EpisodeDataset(synthetic_dataset, shots=3, seed=5)
    b = EpisodeDataset(synthetic_dataset, shots=3, seed=5)
    assert torch.equal(a[(2, 0)]["target"], b[(2, 0)]["target"])
    differs = any(not torch.equal(a[(e, 0)]["frames"], a[(0, 0)]["frames"]) for e in range(1, 6))
    assert differs


def test_resize_scales_landmarks(synthetic_dataset):
    ds = EpisodeDataset(synthetic_dataset, shots=1, size=32, seed=1)
    full = EpisodeDataset(synthetic_dataset, shots=1, size=None, seed=1)
    small, big = ds[(0, 0)], full[(0, 0)]
    assert small["target"].shape == (3, 32, 32)
    assert torch.allclose(small["target_landmarks"] * 2, big["target_landmarks"], atol=1e-4)


def test_flip_augmentation_mirrors_landmarks():
    assert sorted(MIRROR_68.tolist()) == list(range(68))
    assert np.array_equal(MIRROR_68[MIRROR_68], np.arange(68))  # an involution
    assert MIRROR_68[36] == 45 and MIRROR_68[48] == 54 and MIRROR_68[8] == 8


def test_too_many_shots_is_a_clear_error(synthetic_dataset):
    with pytest.raises(TalkingHeadError, match="no video with at least 100 valid frames"):
        EpisodeDataset(synthetic_dataset, shots=99)


def test_videos_list_every_valid_frame(synthetic_dataset):
    videos = load_videos(synthetic_dataset, min_frames=1)
    index = load_index(synthetic_dataset)
    assert sum(len(v.frames) for v in videos) == index["valid_frames"] == 24
    path, t = videos[1].frames[5]
    assert path.endswith("person1_clip.safetensors") and t == 5
    with pytest.raises(IndexError):
        videos[1].frames[8]


def test_index_spans_clips_and_skips_invalid_frames(tmp_path):
    """A video split over two clips, with invalid frames: frame j of the video is the j-th valid one."""
    from talkinghead.data.store import build_index, clip_relpath, write_clip

    images = [np.full((16, 16, 3), 10 * i, np.uint8) for i in range(5)]
    marks = np.zeros((5, 68, 2), np.float32)
    for c, valid in enumerate(([1, 0, 1, 1, 0], [0, 1, 1, 0, 1])):
        write_clip(tmp_path / clip_relpath("p", f"c{c}"), images, marks, np.array(valid), np.zeros((5, 3)),
                   dict(identity="p", video="v", clip=f"c{c}", fps=25, size=16))
    build_index(tmp_path)
    (video,) = load_videos(tmp_path, min_frames=1)
    located = [(p.split("/")[-1], t) for p, t in (video.frames[j] for j in range(len(video.frames)))]
    assert located == [("c0.safetensors", 0), ("c0.safetensors", 2), ("c0.safetensors", 3),
                       ("c1.safetensors", 1), ("c1.safetensors", 2), ("c1.safetensors", 4)]


def test_index_memory_is_at_most_8_bytes_per_frame():
    """VoxCeleb2 has ~2·10⁸ frames: the index must not hold per-frame Python objects. Measured
    with tracemalloc (numpy reports its buffers to it) at 10⁶ simulated frames."""
    import tracemalloc

    from talkinghead.data.store import ClipInfo

    rows = [ClipInfo(clip=f"id{c // 40:05d}_{c:07d}", identity=f"id{c // 40:05d}", video=f"v{c // 4}",
                     path=f"clips/id{c // 40:05d}/id{c // 40:05d}_{c:07d}.safetensors", frames=130,
                     valid_frames=125, fps=25.0, size=256, source="") for c in range(8000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    index = VideoIndex("/nonexistent", rows)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert index.total_frames == 1_000_000 and len(index) == 2000
    assert held / index.total_frames <= 8, f"{held / index.total_frames:.1f} bytes per frame"
    assert index.num_frames(3) == 500


def test_sampler_shards_and_resumes():
    full = EpisodeSampler(10, seed=3)
    stream = iter(full)
    first = [next(stream) for _ in range(25)]
    # resuming at item 7 continues the same stream
    resumed = iter(EpisodeSampler(10, seed=3, start=7))
    assert [next(resumed) for _ in range(18)] == first[7:]
    # two ranks split each epoch without overlap
    r0 = iter(EpisodeSampler(10, seed=3, rank=0, world_size=2))
    r1 = iter(EpisodeSampler(10, seed=3, rank=1, world_size=2))
    e0 = {next(r0)[1] for _ in range(5)}
    e1 = {next(r1)[1] for _ in range(5)}
    assert e0.isdisjoint(e1) and e0 | e1 == set(range(10))
    # every epoch is a permutation, and epochs differ
    assert sorted(i for e, i in first[:10]) == list(range(10))
    assert [i for _, i in first[:10]] != [i for _, i in first[10:20]]


def test_clip_reader_random_access(synthetic_dataset):
    index = load_index(synthetic_dataset)
    reader = ClipReader(synthetic_dataset / index["clips"][0]["path"])
    assert len(reader) == 8 and reader.frame(7).shape == (64, 64, 3)


def test_clip_reader_rejects_garbage(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a clip at all")
    with pytest.raises(TalkingHeadError, match="bad.safetensors"):
        ClipReader(bad)
