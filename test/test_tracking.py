"""Tests of track-id assignment (zs_perception.tracking)."""

import numpy as np
import pytest

from zs_perception.tracking import Tracker


def box_mask(x0, y0, x1, y1, shape=(120, 160)):
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_ids_persist_while_objects_move_a_little():
    tracker = Tracker(iou_threshold=0.3)
    first = tracker.update([box_mask(10, 10, 40, 40), box_mask(80, 50, 120, 90)], ['mug', 'box'])
    assert first == [1, 2]
    # Shifted by a few pixels and listed in the other order.
    second = tracker.update([box_mask(84, 52, 124, 92), box_mask(13, 12, 43, 42)], ['box', 'mug'])
    assert second == [2, 1]


def test_new_object_gets_a_new_id_and_ids_are_never_reused():
    tracker = Tracker(max_missed_frames=1)
    assert tracker.update([box_mask(10, 10, 40, 40)], ['mug']) == [1]
    assert tracker.update([], []) == []
    assert tracker.update([], []) == []  # missed twice > 1: retired
    assert tracker.num_tracks == 0
    assert tracker.update([box_mask(10, 10, 40, 40)], ['mug']) == [2]
    tracker.reset()
    assert tracker.update([box_mask(10, 10, 40, 40)], ['mug']) == [3]


def test_track_survives_missed_frames_within_the_limit():
    tracker = Tracker(max_missed_frames=3)
    tracker.update([box_mask(10, 10, 40, 40)], ['mug'])
    for _ in range(3):
        tracker.update([], [])
    assert tracker.update([box_mask(11, 10, 41, 40)], ['mug']) == [1]


def test_labels_must_match():
    tracker = Tracker()
    tracker.update([box_mask(10, 10, 40, 40)], ['mug'])
    assert tracker.update([box_mask(10, 10, 40, 40)], ['cup']) == [2]


def test_low_overlap_without_position_starts_a_new_track():
    tracker = Tracker(iou_threshold=0.5)
    tracker.update([box_mask(10, 10, 40, 40)], ['mug'])
    assert tracker.update([box_mask(30, 10, 60, 40)], ['mug']) == [2]


def test_distance_matches_when_masks_do_not_overlap():
    tracker = Tracker(iou_threshold=0.5, max_distance_m=0.2)
    tracker.update([box_mask(10, 10, 40, 40)], ['mug'], [np.array([0.0, 0.0, 1.0])])
    ids = tracker.update([box_mask(100, 10, 130, 40)], ['mug'], [np.array([0.1, 0.0, 1.0])])
    assert ids == [1]
    # Too far: new id.
    ids = tracker.update([box_mask(10, 80, 40, 110)], ['mug'], [np.array([1.0, 0.0, 1.0])])
    assert ids == [2]


def test_overlap_outranks_distance():
    tracker = Tracker(iou_threshold=0.3, max_distance_m=1.0)
    tracker.update([box_mask(10, 10, 40, 40), box_mask(100, 10, 130, 40)], ['mug', 'mug'],
                   [np.array([0.0, 0.0, 1.0]), np.array([0.05, 0.0, 1.0])])
    # The first object is nearest in 3D to track 2 but overlaps track 1.
    ids = tracker.update([box_mask(12, 10, 42, 40)], ['mug'], [np.array([0.05, 0.0, 1.0])])
    assert ids == [1]


def test_non_finite_positions_are_ignored():
    tracker = Tracker(iou_threshold=0.9, max_distance_m=1.0)
    tracker.update([box_mask(10, 10, 40, 40)], ['mug'], [np.array([np.nan, 0.0, 1.0])])
    assert tracker.update([box_mask(100, 10, 130, 40)], ['mug'], [np.zeros(3)]) == [2]


def test_image_size_change_falls_back_to_distance():
    tracker = Tracker(max_distance_m=0.5)
    tracker.update([box_mask(10, 10, 40, 40)], ['mug'], [np.array([0.0, 0.0, 1.0])])
    big = box_mask(20, 20, 80, 80, shape=(240, 320))
    assert tracker.update([big], ['mug']) == [2]  # no position: cannot match
    assert tracker.update([big], ['mug'], [np.array([0.0, 0.0, 1.0])]) == [2]


def test_full_resolution_masks_are_compared_downsampled():
    tracker = Tracker()
    shape = (480, 640)
    tracker.update([box_mask(100, 100, 300, 300, shape)], ['mug'])
    assert tracker.update([box_mask(104, 100, 304, 300, shape)], ['mug']) == [1]


def test_bad_arguments_raise():
    tracker = Tracker()
    with pytest.raises(ValueError, match='one label and one position per mask'):
        tracker.update([box_mask(0, 0, 5, 5)], [])
    with pytest.raises(ValueError, match='masks of one size'):
        tracker.update([box_mask(0, 0, 5, 5), box_mask(0, 0, 5, 5, (10, 10))], ['a', 'b'])
