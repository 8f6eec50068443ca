"""FrameSynchronizer fed message by message on an injected clock (no ROS, no sleeping).

A small simulator plays camera streams with given rates, stamps and faults into the
synchroniser and a consumer that takes frames when it is free (busy ``engine_s`` per
frame), as the node's worker does.
"""

import pytest

from zs_perception.pipeline.frame_sync import FrameSynchronizer, JUMP_BACK_S
from zs_perception.testing.doubles import FakeClock

RATE_HZ = 30.0
PERIOD = 1.0 / RATE_HZ


T0 = 100.0  # the stamp clock when the monotonic clock is 0


def simulate(events, seconds, engine_s=0.005, step=0.001, publishers=(1, 1), **kwargs):
    """Play ``events`` [(time, kind, stamp)] and return (frames, synchroniser).

    ``frames``: [(taken at, frame)]. ``kind``: 'image', 'depth' or 'info'.
    """
    clock = FakeClock()
    sync = FrameSynchronizer(clock=clock, stamp_clock=lambda: T0 + clock.t, **kwargs)
    sync.set_publishers(*publishers)
    events = sorted(events, key=lambda e: e[0])
    frames, busy_until, i = [], 0.0, 0
    for n in range(int(seconds / step) + 1):
        clock.t = n * step
        while i < len(events) and events[i][0] <= clock.t + 1e-12:
            _, kind, stamp = events[i]
            {'image': sync.add_image, 'depth': sync.add_depth,
             'info': sync.add_info}[kind]((kind, stamp), stamp)
            i += 1
        if clock.t >= busy_until:
            frame, _ = sync.poll()
            if frame is not None:
                frames.append((clock.t, frame))
                busy_until = clock.t + engine_s
    return frames, sync


def camera(seconds, rate=RATE_HZ, depth=True, info=True, depth_offset=0.0, info_offset=0.0,
           depth_stamp=None, info_stamp=None, depth_until=None, info_until=None,
           depth_rate=None, t0=T0, latency=0.004):
    """Events of a camera: images and (optionally faulty) depth and camera info."""
    events = []
    for k in range(int(seconds * rate)):
        at = k / rate
        stamp = t0 + at
        events.append((at + latency, 'image', stamp))
        depth_due = depth and (depth_until is None or at < depth_until)
        if depth_due and depth_rate is not None:
            depth_due = k % round(rate / depth_rate) == 0
        if depth_due:
            events.append((at + latency + 0.002, 'depth',
                           depth_stamp if depth_stamp is not None else stamp + depth_offset))
        if info and (info_until is None or at < info_until):
            events.append((at + latency + 0.001, 'info',
                           info_stamp if info_stamp is not None else stamp + info_offset))
    return events


def test_synced_streams_give_every_frame_complete():
    frames, _ = simulate(camera(3.0), 3.1)
    assert len(frames) == 90
    assert all(f.depth is not None and f.info is not None for _, f in frames)
    assert sum(f.dropped for _, f in frames) == 0
    # Each frame is taken as soon as its depth (the last message) arrived.
    assert all(at - f.arrival_s <= 0.004 for at, f in frames)


@pytest.mark.parametrize('fault, expected_reason', [
    ({'depth_until': 1.0}, ('depth late', 'no depth image')),      # depth stalls
    ({'info_until': 1.0}, ('camera_info late', 'no camera_info')),  # camera_info stops
    ({'info_stamp': 0.0}, ('camera_info stamp mismatch',)),         # stamped 0
    ({'depth_offset': 0.5}, ('depth stamp mismatch',)),             # 0.5 s ahead
])
def test_starvation_cases_keep_the_camera_rate(fault, expected_reason):
    seconds = 5.0
    frames, _ = simulate(camera(seconds, **fault), seconds + 0.2)
    images = int(seconds * RATE_HZ)
    assert len(frames) >= 0.8 * images, (len(frames), images)
    reasons = {(f.depth_miss or f.info_miss).reason for _, f in frames
               if f.depth is None or f.info is None}
    assert reasons and reasons <= set(expected_reason), reasons
    late = [f for at, f in frames if at > 1.5]  # every fault is on by then
    assert all(f.depth is None or f.info is None for f in late)
    # The wait of every frame is bounded by sync_wait_s from its own arrival.
    assert max(at - f.arrival_s for at, f in frames) <= 0.1 + 0.002


def test_silent_publisher_is_waited_for_only_briefly():
    # A camera_info publisher exists but never publishes.
    seconds = 5.0
    frames, _ = simulate(camera(seconds, info=False), seconds + 0.2, publishers=(1, 1),
                         stream_timeout_s=1.0)
    assert len(frames) >= 0.8 * seconds * RATE_HZ
    waits = [at - f.arrival_s for at, f in frames]
    assert max(waits) <= 0.1 + 0.002
    # After the stream timeout nothing waits any more.
    assert max(at - f.arrival_s for at, f in frames if at > 1.2) <= 0.0025
    assert {f.info_miss.reason for _, f in frames} <= {'camera_info late', 'no camera_info'}
    assert 'never published' in frames[-1][1].info_miss.detail


def test_no_publisher_no_wait():
    frames, _ = simulate(camera(1.0, depth=False, info=False), 1.1, publishers=(0, 0))
    assert len(frames) == 30
    assert all(at - f.arrival_s <= 0.0005 for at, f in frames)
    assert all(f.info_miss.reason == 'no camera_info' for _, f in frames)
    assert all(f.depth_miss.reason == 'no depth image' and f.depth_miss.kind == 'none'
               for _, f in frames)


def test_depth_at_half_the_colour_rate():
    # The newest complete frame wins: an image without depth is dropped as soon as the next
    # one arrives with its depth, so the output runs at the depth rate, every frame with depth.
    frames, _ = simulate(camera(4.0, depth_rate=15.0), 4.2)
    with_depth = [f for _, f in frames if f.depth is not None]
    assert len(with_depth) >= 0.95 * 60
    assert all(f.depth[1] == f.stamp_s for f in with_depth)
    assert len(frames) - len(with_depth) <= 1  # the last image, whose depth never comes
    # No frame waits longer than its own deadline, none waits for the next depth image.
    assert max(at - f.arrival_s for at, f in frames if f.depth is not None) <= 0.003


def test_wait_is_not_pushed_back_by_newer_images():
    clock = FakeClock()
    sync = FrameSynchronizer(clock=clock, wait_s=0.1)
    sync.set_publishers(1, 1)
    sync.add_depth('d', 9.95)  # the depth stream is active, then stops
    sync.add_info('i', 9.95)
    for k in range(3):
        clock.t = k * PERIOD
        sync.add_image(f'image {k}', 10.0 + k * PERIOD)
        frame, wait = sync.poll()
        assert frame is None and wait == pytest.approx(0.1 - k * PERIOD)
    clock.t = 0.1
    frame, _ = sync.poll()
    assert frame.image == 'image 0' and frame.depth_miss.reason == 'depth late'
    assert frame.dropped == 0 and sync.pending == 2
    clock.t = 0.1 + PERIOD
    assert sync.poll()[0].image == 'image 1'


def test_newest_ready_frame_wins_for_a_slow_consumer():
    frames, _ = simulate(camera(3.0), 3.3, engine_s=0.2)
    assert 12 <= len(frames) <= 16  # one frame per 0.2 s
    assert sum(f.dropped for _, f in frames) >= 60
    assert all(f.depth is not None for _, f in frames)
    # The frame taken is the newest complete one: at most a period (+ the depth's delay) old.
    assert all(at - f.arrival_s <= PERIOD + 0.007 for at, f in frames)


def test_bag_loop_resets_matching():
    first = camera(2.0, t0=100.0)
    second = [(at + 2.0, kind, stamp) for at, kind, stamp in camera(2.0, t0=100.0)]
    frames, sync = simulate(first + second, 4.2)
    assert len(frames) >= 0.95 * 120
    resets = [at for at, f in frames if f.stamps_reset]
    assert len(resets) == 1 and 2.0 <= resets[0] <= 2.1
    assert sync.time_jumps == 1
    # After the jump the frames match their depth again at once.
    after = [f for at, f in frames if at > resets[0]]
    assert sum(f.depth is None for f in after) <= 1
    assert JUMP_BACK_S < 2.0


def test_image_buffer_is_bounded():
    clock = FakeClock()
    sync = FrameSynchronizer(clock=clock, image_buffer=4)
    sync.set_publishers(1, 1)
    dropped = sum(sync.add_image(k, 10.0 + k * PERIOD) for k in range(10))
    assert dropped == 6 and sync.pending == 4


def test_rejects_bad_sizes():
    with pytest.raises(ValueError, match='image_buffer'):
        FrameSynchronizer(image_buffer=0)


def test_stamps_ahead_of_the_clock_are_never_matched_unless_the_clock_has_no_time():
    clock, stamp_clock = FakeClock(), FakeClock(100.0)
    sync = FrameSynchronizer(clock=clock, stamp_clock=stamp_clock)
    sync.set_publishers(1, 1)
    sync.add_depth('ahead', 100.5)
    sync.add_info('info', 100.5)
    sync.add_image('image', 100.5)
    frame, _ = sync.poll()
    assert frame.depth is None and 'ahead of this node' in frame.depth_miss.detail
    stamp_clock.t = 0.0  # use_sim_time before the first /clock message
    sync.add_depth('depth', 101.0)
    sync.add_info('info', 101.0)
    sync.add_image('image', 101.0)
    assert sync.poll()[0].depth == 'depth'
