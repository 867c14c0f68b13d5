"""The predictions file: round trip, and malformed files rejected with the key and problem named."""

import json

import numpy as np
import pytest

from d3p_model.data.predictions import (FORMAT, VERSION, Predictions, PredictionsFormatError,
                                        Sequence, action_of, load_predictions, normalise_screen,
                                        save_predictions)
from d3p_model.data.synthetic import make_synthetic_predictions

KEY = "S9/Walking 1/cam0"


def valid_arrays(frames=5):
    rng = np.random.default_rng(0)
    return {
        f"{KEY}/keypoints_2d": rng.uniform(0, 1000, (frames, 17, 2)).astype(np.float32),
        f"{KEY}/image_size": np.array([1000, 1002], np.float32),
        f"{KEY}/pose_3d": rng.normal(0, 0.3, (frames, 17, 3)).astype(np.float32),
        f"{KEY}/ground_truth_3d": rng.normal(0, 0.3, (frames, 17, 3)).astype(np.float32),
    }


def write(path, arrays, meta=None):
    meta = {"format": FORMAT, "version": VERSION, "layout": "h36m17"} if meta is None else meta
    np.savez(path, __meta__=np.array(json.dumps(meta)), **arrays)
    return path


def test_round_trip(tmp_path):
    original = make_synthetic_predictions(num_sequences=3, num_frames=12)
    original.sequences["S9/Walking 1/cam0"] = Sequence(
        **{name: value for name, value in vars(next(iter(original.sequences.values()))).items()
           if name != "confidence_2d"},
        confidence_2d=np.linspace(0, 1, 12 * 17, dtype=np.float32).reshape(12, 17))
    original.meta["seed"] = np.int64(7)  # numpy scalars in provenance are stored as JSON
    path = tmp_path / "no_suffix"  # written at exactly this path
    save_predictions(path, original)
    loaded = load_predictions(path)
    assert list(loaded.sequences) == list(original.sequences)
    assert loaded.meta["format"] == FORMAT and loaded.meta["version"] == VERSION
    assert loaded.meta["seed"] == 7 and loaded.meta["synthetic"] is True
    for key, seq in original.items():
        for name in ("keypoints_2d", "image_size", "pose_3d", "ground_truth_3d", "confidence_2d"):
            want, got = getattr(seq, name), getattr(loaded.sequences[key], name)
            if want is None:
                assert got is None
            else:
                assert got.dtype == np.float32 and np.array_equal(got, want)


def test_minimal_file_without_ground_truth_loads(tmp_path):
    arrays = valid_arrays()
    del arrays[f"{KEY}/ground_truth_3d"]
    loaded = load_predictions(write(tmp_path / "p.npz", arrays))
    seq = loaded.sequences[KEY]
    assert seq.ground_truth_3d is None and seq.num_frames == 5


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop(f"{KEY}/pose_3d"), f"'{KEY}/pose_3d' is missing"),
    (lambda a: a.pop(f"{KEY}/image_size"), f"'{KEY}/image_size' is missing"),
    (lambda a: a.update({f"{KEY}/pose_3d": np.zeros((5, 16, 3), np.float32)}),
     f"'{KEY}/pose_3d' has shape \\(5, 16, 3\\)"),
    (lambda a: a.update({f"{KEY}/keypoints_2d": np.zeros((4, 17, 2), np.float32)}),
     f"'{KEY}/keypoints_2d' has shape \\(4, 17, 2\\), expected \\(5, 17, 2\\)"),
    (lambda a: a[f"{KEY}/ground_truth_3d"].__setitem__((2, 3, 1), np.nan),
     f"'{KEY}/ground_truth_3d' contains NaN"),
    (lambda a: a[f"{KEY}/pose_3d"].__setitem__((0, 0, 0), np.inf), f"'{KEY}/pose_3d' contains NaN or inf"),
    (lambda a: a.update({f"{KEY}/image_size": np.array([0, 1000], np.float32)}),
     f"'{KEY}/image_size' must be positive"),
    (lambda a: a.update({f"{KEY}/depth": np.zeros(3)}), f"'{KEY}/depth' is not '<sequence>/<array>'"),
    (lambda a: a.update({f"{KEY}/pose_3d": np.array(["x"] * 255).reshape(5, 17, 3)}),
     f"'{KEY}/pose_3d' is not numeric"),
    (lambda a: a.update({f"{KEY}/pose_3d": np.zeros((0, 17, 3), np.float32),
                         f"{KEY}/keypoints_2d": np.zeros((0, 17, 2), np.float32),
                         f"{KEY}/ground_truth_3d": np.zeros((0, 17, 3), np.float32)}),
     f"'{KEY}/pose_3d' has no frames"),
])
def test_malformed_arrays_name_key_and_problem(tmp_path, change, message):
    arrays = valid_arrays()
    change(arrays)
    with pytest.raises(PredictionsFormatError, match=message):
        load_predictions(write(tmp_path / "bad.npz", arrays))


@pytest.mark.parametrize("meta, message", [
    ({"format": FORMAT, "version": 99}, "'__meta__' has version 99"),
    ({"format": "something-else", "version": VERSION}, "'__meta__' has format 'something-else'"),
    ({"format": FORMAT, "version": VERSION, "layout": "coco17"}, "'__meta__' has layout 'coco17'"),
    ([1, 2], "'__meta__' must be a JSON object"),
])
def test_bad_meta(tmp_path, meta, message):
    with pytest.raises(PredictionsFormatError, match=message):
        load_predictions(write(tmp_path / "bad.npz", valid_arrays(), meta))


def test_missing_or_unparsable_meta(tmp_path):
    np.savez(tmp_path / "no_meta.npz", **valid_arrays())
    with pytest.raises(PredictionsFormatError, match="'__meta__' is missing"):
        load_predictions(tmp_path / "no_meta.npz")
    np.savez(tmp_path / "text_meta.npz", __meta__=np.array("{not json"), **valid_arrays())
    with pytest.raises(PredictionsFormatError, match="'__meta__' is not JSON"):
        load_predictions(tmp_path / "text_meta.npz")


def test_not_an_npz(tmp_path):
    (tmp_path / "text.npz").write_text("hello, I am not an archive\n")
    with pytest.raises(PredictionsFormatError, match="not a readable .npz"):
        load_predictions(tmp_path / "text.npz")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(PredictionsFormatError, match="not a readable .npz"):
        load_predictions(tmp_path / "broken.npz")
    np.save(tmp_path / "array.npy", np.zeros((5, 17, 3)))
    with pytest.raises(PredictionsFormatError, match="not an .npz archive"):
        load_predictions(tmp_path / "array.npy")
    with pytest.raises(PredictionsFormatError, match="no such file"):
        load_predictions(tmp_path / "absent.npz")


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    arrays = valid_arrays()
    arrays[f"{KEY}/pose_3d"] = np.array([{"evil": 1}], dtype=object)
    with pytest.raises(PredictionsFormatError, match=f"'{KEY}/pose_3d' cannot be read"):
        load_predictions(write(tmp_path / "obj.npz", arrays))


def test_save_validates_too(tmp_path):
    seq = Sequence(np.zeros((3, 17, 2), np.float32), np.array([640, 480], np.float32),
                   np.zeros((3, 17, 3), np.float32), np.zeros((2, 17, 3), np.float32))
    with pytest.raises(PredictionsFormatError, match="'a/ground_truth_3d' has shape"):
        save_predictions(tmp_path / "x.npz", Predictions({"a": seq}))
    seq.ground_truth_3d = None
    with pytest.raises(PredictionsFormatError, match="sequence key ''"):
        save_predictions(tmp_path / "x.npz", Predictions({"": seq}))
    assert not (tmp_path / "x.npz").exists()  # nothing half-written


def test_action_names_and_screen_normalisation():
    assert action_of("S9/Walking 1/54138969") == "Walking"
    assert action_of("S11/SittingDown/cam2") == "SittingDown"
    assert action_of("my_video") == "my_video"
    pixels = np.array([[0, 0], [1000, 1002], [500, 501]], np.float32)
    assert np.allclose(normalise_screen(pixels, 1000, 1002),
                       [[-1, -1.002], [1, 1.002], [0, 0]])
