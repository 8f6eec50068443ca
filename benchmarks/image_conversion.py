"""Image message -> numpy: PyPI cv_bridge against the zero-copy view the node uses.

Run from the repository root with the colcon build sourced::

    source scripts/env.sh && python -m benchmarks.image_conversion

Prints, per 640x480 encoding, the median/p90 time of ``CvBridge.imgmsg_to_cv2`` (or the
error it raises) and of ``zs_perception.ros.conversions`` (``image_to_rgb`` for colour,
``depth_image_to_metres`` / ``image_to_array`` for depth), plus the publish-side
``cv2_to_imgmsg`` against ``array_to_image``.
"""

from benchmarks.report import emit, stats_ms, time_calls
import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from zs_perception.ros import conversions

WIDTH, HEIGHT, REPEATS = 640, 480, 200


def _message(encoding, array):
    msg = Image(height=HEIGHT, width=WIDTH, encoding=encoding, step=array.strides[0])
    msg.data = array.tobytes()
    return msg


def _row(name, fn):
    try:
        fn()
    except Exception as err:
        return {'conversion': name, 'median_ms': None, 'p90_ms': None,
                'error': f'{type(err).__name__}: {err}'[:90]}
    s = stats_ms(time_calls(fn, REPEATS, warmup=5))
    return {'conversion': name, 'median_ms': s['median_ms'], 'p90_ms': s['p90_ms'], 'error': ''}


def main():
    from cv_bridge import CvBridge
    bridge = CvBridge()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    rgba = rng.integers(0, 255, (HEIGHT, WIDTH, 4), dtype=np.uint8)
    mono = rgb[..., 0].copy()
    depth_mm = rng.integers(300, 5000, (HEIGHT, WIDTH), dtype=np.uint16)
    depth_m = depth_mm.astype(np.float32) / 1000.0
    msgs = {'rgb8': _message('rgb8', rgb), 'bgr8': _message('bgr8', rgb),
            'rgba8': _message('rgba8', rgba), 'mono8': _message('mono8', mono),
            '16UC1': _message('16UC1', depth_mm), '32FC1': _message('32FC1', depth_m)}
    rows = []
    for enc in ('rgb8', 'bgr8', 'rgba8', 'mono8'):
        msg = msgs[enc]
        rows.append(_row(f'cv_bridge imgmsg_to_cv2({enc}, rgb8)',
                         lambda m=msg: bridge.imgmsg_to_cv2(m, 'rgb8')))
        rows.append(_row(f'cv_bridge imgmsg_to_cv2({enc}, passthrough)',
                         lambda m=msg: bridge.imgmsg_to_cv2(m, 'passthrough')))
        rows.append(_row(f'view image_to_rgb({enc})',
                         lambda m=msg: conversions.image_to_rgb(m)))
    for enc in ('16UC1', '32FC1'):
        msg = msgs[enc]
        out = bridge.imgmsg_to_cv2(msg, 'passthrough')
        rows.append(_row(f'cv_bridge imgmsg_to_cv2({enc}, passthrough) -> {out.dtype}',
                         lambda m=msg: bridge.imgmsg_to_cv2(m, 'passthrough')))
        rows.append(_row(f'view image_to_array({enc})',
                         lambda m=msg: conversions.image_to_array(m,
                                                                  conversions.DEPTH_ENCODINGS)))
        rows.append(_row(f'view depth_image_to_metres({enc})',
                         lambda m=msg: conversions.depth_image_to_metres(m)))
    header = Header()
    rows.append(_row('cv_bridge cv2_to_imgmsg(rgb8)', lambda: bridge.cv2_to_imgmsg(rgb, 'rgb8')))
    rows.append(_row('array_to_image(rgb8)',
                     lambda: conversions.array_to_image(rgb, 'rgb8', header)))
    emit('image_conversion', rows, {'width': WIDTH, 'height': HEIGHT, 'repeats': REPEATS})


if __name__ == '__main__':
    main()
