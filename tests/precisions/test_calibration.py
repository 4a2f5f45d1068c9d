"""Calibration inputs: a .npz file, a directory of .npz/.npy files, and clear errors for unusable data."""

from __future__ import annotations

import numpy as np
import pytest

from deploykit.errors import UserInputError
from deploykit.precisions.calibration import MAX_CALIBRATION_BATCH, Reader, load_calibration, random_calibration


def test_npz_by_input_name_split_into_batches(tmp_path):
    data = np.random.default_rng(0).standard_normal((40, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "cal.npz", input=data, other=np.zeros(3))
    cal = load_calibration(tmp_path / "cal.npz", "input", channels=3)
    assert cal.samples == 40 and not cal.random
    assert [len(b) for b in cal.batches] == [MAX_CALIBRATION_BATCH, MAX_CALIBRATION_BATCH, 8]
    np.testing.assert_array_equal(np.concatenate(cal.batches), data)
    reader = Reader(cal, "input")
    fed = []
    while (item := reader.get_next()) is not None:
        fed.append(item["input"])
    assert len(fed) == 3
    reader.rewind()
    assert reader.get_next() is not None


def test_directory_of_npy_and_single_array_npz(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((3, 8, 8), np.float32))          # one sample
    np.savez(tmp_path / "b.npz", np.zeros((2, 3, 8, 8), np.float32))     # one unnamed array
    (tmp_path / "notes.txt").write_text("ignored")
    cal = load_calibration(tmp_path, "input", channels=3)
    assert cal.samples == 3 and cal.source == str(tmp_path)


@pytest.mark.parametrize("arrays,words", [
    ({"input": np.ones((2, 4, 8, 8), np.float32)}, "expected N x 3 x H x W"),
    ({"input": np.full((1, 3, 8, 8), np.nan, np.float32)}, "not finite"),
    ({"x": np.ones((1, 3, 8, 8)), "y": np.ones((1, 3, 8, 8))}, "none named 'input'"),
])
def test_unusable_files(tmp_path, arrays, words):
    np.savez(tmp_path / "cal.npz", **arrays)
    with pytest.raises(UserInputError, match=words):
        load_calibration(tmp_path / "cal.npz", "input", channels=3)


def test_absent_and_empty(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_calibration(tmp_path / "none.npz", "input", channels=3)
    with pytest.raises(UserInputError, match="no .npz or .npy"):
        load_calibration(tmp_path, "input", channels=3)


def test_random_is_marked_random():
    cal = random_calibration((2, 3, 8, 8), seed=0)
    assert cal.random and cal.samples == 8
