"""Write the demo scene (a red box and a blue cylinder on a table) as a replay directory.

Usage::

    python -m zs_perception.tools.make_demo_scene OUT_DIR [--frames 5] [--width 640]
        [--height 480] [--seed 0]

writes ``OUT_DIR/NNNNNN-color.png`` (RGB), ``OUT_DIR/NNNNNN-depth.png`` (``uint16``
millimetres), ``OUT_DIR/camera_info.json`` (the replay format of
:mod:`zs_perception.replay_directory`) and ``OUT_DIR/ground_truth.json`` (per frame and object: the
true position (m), orientation (quaternion x, y, z, w) and extents (m) in the camera
optical frame). Frame ``i`` is :func:`zs_perception.testing.scene.render_scene` with seed
``seed + i``: the same two objects seen from a slightly different viewpoint each frame.
"""

import argparse
import json
from pathlib import Path
import sys
from typing import Union

from zs_perception.geometry import rotation_to_quaternion
from zs_perception.replay_directory import write_frame, write_intrinsics
from zs_perception.testing.scene import render_scene

GROUND_TRUTH_FILE = 'ground_truth.json'


def make_demo_scene(out_dir: Union[str, Path], frames: int = 5, width: int = 640,
                    height: int = 480, seed: int = 0) -> Path:
    """Render ``frames`` frames of the demo scene into the replay directory ``out_dir``.

    Returns:
        ``out_dir`` (created if missing).

    Raises:
        ValueError: ``frames`` < 1, or an image size the renderer rejects.

    """
    if frames < 1:
        raise ValueError(f'make_demo_scene: frames must be >= 1, got {frames}.')
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    truth = []
    intrinsics = None
    for i in range(frames):
        scene = render_scene(width=width, height=height, seed=seed + i)
        if intrinsics is None:
            intrinsics = scene['intrinsics']
        elif scene['intrinsics'] != intrinsics:
            raise ValueError('make_demo_scene: the renderer changed the intrinsics between '
                             'frames; a replay directory holds one camera.')
        write_frame(out_dir, i, scene['rgb'], scene['depth_m'])
        truth.append({
            'frame': i,
            'objects': {
                name: {'position': [float(v) for v in position],
                       'orientation': [float(v) for v in rotation_to_quaternion(rotation)],
                       'extents': [float(v) for v in scene['extents'][name]],
                       'mask_pixels': int(scene['masks'][name].sum())}
                for name, (position, rotation) in scene['poses'].items()},
        })
    write_intrinsics(out_dir, intrinsics)
    (out_dir / GROUND_TRUTH_FILE).write_text(json.dumps(
        {'frame_id': 'camera optical frame (REP-103), metres; quaternions x, y, z, w',
         'frames': truth}, indent=2) + '\n')
    return out_dir


def main(argv=None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out_dir', type=Path, help='directory to write into (created)')
    parser.add_argument('--frames', type=int, default=5, help='number of frames (default 5)')
    parser.add_argument('--width', type=int, default=640, help='image width (default 640)')
    parser.add_argument('--height', type=int, default=480, help='image height (default 480)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the first frame')
    args = parser.parse_args(argv)
    out = make_demo_scene(args.out_dir, args.frames, args.width, args.height, args.seed)
    print(f'Wrote {args.frames} frames of the demo scene to {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
