"""FindQuery (the FindObjects action's logic) on an injected clock, without ROS."""

import pytest

from zs_perception.pipeline import find_objects as fo
from zs_perception.pipeline.find_objects import Candidate, FindQuery
from zs_perception.testing.doubles import FakeClock


def _mug(score=0.9, pose=True):
    return Candidate('mug', score, pose, payload=('mug', score))


def test_found_after_consecutive_frames():
    clock = FakeClock(10.0)
    query = FindQuery(['mug'], clock(), 2.0, min_score=0.5, consecutive_frames=3)
    for i in range(2):
        clock.t += 0.1
        assert query.frame([_mug()], clock.t, True, clock.t) is None
    clock.t += 0.1
    verdict = query.frame([_mug(0.8)], clock.t, True, clock.t)
    assert verdict.status == fo.FOUND and verdict.frames == 3
    assert [c.payload for c in verdict.confirmed] == [('mug', 0.8)]
    assert verdict.stamp_s == pytest.approx(10.3)


def test_a_gap_restarts_the_streak():
    clock = FakeClock()
    query = FindQuery(['mug'], 0.0, 5.0, consecutive_frames=2)
    assert query.frame([_mug()], 0.1, True, 0.1) is None
    assert query.frame([], 0.2, True, 0.2) is None
    assert query.frame([_mug()], 0.3, True, 0.3) is None
    assert query.frame([_mug()], 0.4, True, 0.4).status == fo.FOUND
    assert clock() == 0.0


def test_low_scores_and_missing_poses_do_not_count():
    query = FindQuery(['mug'], 0.0, 1.0, min_score=0.7, pose_required=True)
    assert query.frame([_mug(0.6), _mug(0.95, pose=False)], 0.1, True, 0.1) is None
    assert query.check(0.5) is None
    verdict = query.check(1.0)
    assert verdict.status == fo.NOT_FOUND and 'without a pose' in verdict.reason
    assert query.frame([_mug()], 1.1, True, 1.1) is verdict  # ended: stays ended


def test_not_found_says_why():
    query = FindQuery(['mug', 'drill'], 0.0, 1.0, min_score=0.5)
    query.frame([_mug(0.3)], 0.1, True, 0.1)
    verdict = query.check(2.0)
    assert verdict.status == fo.NOT_FOUND
    assert 'min_score' in verdict.reason and "'drill' never seen" in verdict.reason


def test_partial_when_some_labels_confirmed():
    query = FindQuery(['mug', 'drill'], 0.0, 1.0)
    assert query.frame([_mug()], 0.1, True, 0.1) is None
    verdict = query.check(1.5)
    assert verdict.status == fo.PARTIAL
    assert [c.label for c in verdict.confirmed] == ['mug']


def test_every_label_confirmed_is_found_even_in_different_frames():
    query = FindQuery(['mug', 'drill'], 0.0, 3.0)
    assert query.frame([_mug()], 0.1, True, 0.1) is None
    verdict = query.frame([Candidate('drill', 0.5, True)], 0.2, True, 0.2)
    assert verdict.status == fo.FOUND and [c.label for c in verdict.confirmed] == [
        'mug', 'drill']


def test_no_camera_and_no_depth():
    assert FindQuery(['mug'], 0.0, 1.0).check(1.0).status == fo.NO_CAMERA
    query = FindQuery(['mug'], 0.0, 1.0, pose_required=True)
    query.frame([_mug(pose=False)], 0.1, False, 0.1)
    verdict = query.check(1.0)
    assert verdict.status == fo.NO_DEPTH and 'depth' in verdict.reason
    # Without a pose required, missing depth is no reason to fail.
    query = FindQuery(['mug'], 0.0, 1.0)
    assert query.frame([_mug(pose=False)], 0.1, False, 0.1).status == fo.FOUND


def test_cancel_and_abort():
    query = FindQuery(['mug'], 0.0, 1.0)
    assert query.cancel().status == fo.CANCELLED
    assert query.check(5.0).status == fo.CANCELLED
    assert FindQuery(['mug'], 0.0, 1.0).abort('stopping').status == fo.ABORTED


@pytest.mark.parametrize('kwargs, words', [
    ({'labels': []}, 'no prompt'), ({'timeout_s': 0.0}, 'timeout_s'),
    ({'min_score': 1.5}, 'min_score'), ({'consecutive_frames': 0}, 'consecutive_frames')])
def test_bad_goals_are_refused(kwargs, words):
    args = {'labels': ['mug'], 'started_s': 0.0, 'timeout_s': 1.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=words):
        FindQuery(**args)
