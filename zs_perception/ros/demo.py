"""The main job: replay a scene through the perception node and write what it found.

One command runs a real ROS 2 graph in one process (its own rclpy context, a
single-threaded executor): the replay publisher plays a scene directory as ``image``,
``depth`` and ``camera_info``; the perception node segments it; a client node publishes
the goal (transient-local ``std_msgs/String`` on ``goal``) and records ``~/objects`` and
``~/debug_image``. Frames are played one at a time, each as soon as the result of the
previous one arrived, so a slow model drops none. Output (``--output``, default
``demo_output``)::

    scene/                 the generated demo scene (unless --scene or --bag was given)
    overlay_NNNNNN.png     the node's debug overlay of frame N (masks, boxes, labels)
    summary.json           per frame: stamp and objects (id, label, score, roi, pose, size,
                           truncated, occluded, shape, pose_confidence); which weights were
                           used and how long a download took
    outputs/               with --record: every output of the node as an MCAP bag

Weights (``--weights``): ``auto`` (default) uses real CLIPSeg weights when it can, first
from the Hugging Face cache, then downloaded from the hub when it is reachable, and only
when neither has them generates random weights with loud warnings; ``real`` exits 2 with
instructions instead of falling back; ``random`` (or ``--random-weights``) always uses
random weights. A local ``--clipseg-model DIR`` is used as given.

Usage::

    zs_perception_demo                             # real weights when it can
    zs_perception_demo --clipseg-model DIR --sam-checkpoint sam_vit_b_01ec64.pth
    zs_perception_demo --bag BAG --record out_bag  # a rosbag2 as the scene, outputs recorded
    zs_perception_demo --random-weights            # random models, meaningless
"""

import argparse
import json
from pathlib import Path
import sys
import threading
import time
from typing import Any, Dict, List, Optional

import cv2
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import String

from zs_perception import config
from zs_perception.msg import SegmentedObjectArray
from zs_perception.ros.conversions import image_to_rgb
from zs_perception.ros.node import PerceptionNode
from zs_perception.ros.qos import GOAL_QOS
from zs_perception.ros.record import OutputRecorder
from zs_perception.ros.replay import ReplayPublisher
from zs_perception.segmentation.base import ModelLoadError
from zs_perception.segmentation.hub import choose_weights, WeightsChoice
from zs_perception.segmentation.loading import SAM_CHECKPOINT_URLS
from zs_perception.testing.random_models import SIZES, write_random_models
from zs_perception.tools.make_demo_scene import make_demo_scene

DEFAULT_GOAL = 'red box, blue cylinder'
EXIT_NO_WEIGHTS = 2
EXIT_INCOMPLETE = 1
# Output topics the recorder must have found before the frames start (objects, masks, poses,
# markers, points, debug image, diagnostics).
_RECORDED_AT_LEAST = 7
RANDOM_WARNING = ('RANDOM WEIGHTS: the models hold random weights (--random-weights, or no '
                  'real weights were found), so the masks, labels and poses are MEANINGLESS. '
                  'This run shows the ROS plumbing only; use real weights for real results.')
WEIGHT_MODES = ('auto', 'real', 'random')


def fetch_instructions(sam_model_type: str = 'vit_b') -> str:
    """Say how to get the pretrained weights and rerun the demo with them."""
    url = SAM_CHECKPOINT_URLS.get(sam_model_type, SAM_CHECKPOINT_URLS['vit_b'])
    sam_file = url.rsplit('/', 1)[1]
    clipseg = config.SPECS['clipseg_model'].default
    return (
        'The demo needs pretrained weights. On a machine with internet access run:\n'
        f'  pip install -U huggingface_hub\n'
        f'  huggingface-cli download {clipseg} --local-dir models/clipseg-rd64-refined\n'
        f'  wget -P models {url}\n'
        'copy models/ here if needed, then run:\n'
        '  zs_perception_demo --clipseg-model models/clipseg-rd64-refined '
        f'--sam-checkpoint models/{sam_file}\n'
        'To see the plumbing work without weights (random models, MEANINGLESS results):\n'
        '  zs_perception_demo --random-weights')


class _Recorder:
    """Keeps the node's outputs by stamp and lets the main thread wait for them."""

    def __init__(self):
        self._cond = threading.Condition()
        self.objects: Dict[tuple, SegmentedObjectArray] = {}
        self.overlays: Dict[tuple, Image] = {}

    def on_objects(self, msg: SegmentedObjectArray) -> None:
        with self._cond:
            self.objects[_key(msg.header)] = msg
            self._cond.notify_all()

    def on_overlay(self, msg: Image) -> None:
        with self._cond:
            self.overlays[_key(msg.header)] = msg
            self._cond.notify_all()

    def wait(self, store: Dict[tuple, Any], key: tuple, timeout_s: float):
        with self._cond:
            self._cond.wait_for(lambda: key in store, timeout=timeout_s)
            return store.get(key)


def _key(header) -> tuple:
    return (header.stamp.sec, header.stamp.nanosec)


def _wait_until(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def object_summary(obj) -> Dict[str, Any]:
    """JSON-ready summary of one ``zs_perception/SegmentedObject`` (metres, x y z w)."""
    out = {
        'id': int(obj.id), 'label': obj.label, 'score': round(float(obj.score), 4),
        'roi': [int(obj.roi.x_offset), int(obj.roi.y_offset), int(obj.roi.width),
                int(obj.roi.height)],
        'has_pose': bool(obj.has_pose), 'pose_status': obj.pose_status,
        'pose': None, 'size': None, 'num_points': int(obj.num_points),
        'depth_valid_fraction': round(float(obj.depth_valid_fraction), 4),
        'truncated': bool(obj.truncated), 'occluded': bool(obj.occluded), 'shape': obj.shape,
        'pose_confidence': round(float(obj.pose_confidence), 4),
    }
    if obj.has_pose:
        p, q = obj.pose.position, obj.pose.orientation
        out['pose'] = {'position': [round(v, 4) for v in (p.x, p.y, p.z)],
                       'orientation': [round(v, 4) for v in (q.x, q.y, q.z, q.w)]}
        out['size'] = [round(v, 4) for v in (obj.size.x, obj.size.y, obj.size.z)]
    return out


def _describe(obj: Dict[str, Any]) -> str:
    text = f'{obj["label"]} #{obj["id"]} ({obj["score"]:.2f})'
    if obj['has_pose']:
        x, y, z = obj['pose']['position']
        sx, sy, sz = obj['size']
        text += f' at ({x:+.2f}, {y:+.2f}, {z:.2f}) m, {sx:.2f}x{sy:.2f}x{sz:.2f} m'
    else:
        text += f' (no pose: {obj["pose_status"]})'
    return text


def _frame_line(objects: List[Dict[str, Any]], most: int = 5) -> str:
    text = f'{len(objects)} objects' + (': ' if objects else '')
    text += '; '.join(_describe(o) for o in objects[:most])
    if len(objects) > most:
        text += f'; and {len(objects) - most} more (see summary.json)'
    return text


def _stamp_random_warning(bgr) -> None:
    """Write a red 'RANDOM WEIGHTS' banner across the top of a BGR image, in place."""
    cv2.rectangle(bgr, (0, 0), (bgr.shape[1], 22), (0, 0, 0), -1)
    cv2.putText(bgr, 'RANDOM WEIGHTS - results are meaningless', (6, 16),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 255), 1, cv2.LINE_AA)


def _banner(text: str) -> None:
    print('!' * 78 + '\n' + text + '\n' + '!' * 78, flush=True)


def choose_models(args, output: Path) -> Optional[Dict[str, Any]]:
    """Decide the weights (``--weights``); return the node's model parameters and a report.

    Returns:
        ``{'params': node parameters, 'weights': what was used (source, path, random,
        download_s, detail), 'random': bool}``, or ``None`` when ``--weights real`` found
        no real weights (the caller exits :data:`EXIT_NO_WEIGHTS`).

    """
    mode = 'random' if args.random_weights else args.weights
    params = {'backend': args.backend, 'clipseg_model': args.clipseg_model,
              'sam_checkpoint': args.sam_checkpoint, 'sam_model_type': args.sam_model_type,
              'device': args.device, 'allow_random_weights': mode == 'random'}
    needs_sam = args.backend != 'clipseg' and not args.sam_checkpoint
    if mode == 'random':
        choice = WeightsChoice('random', '', True, detail='--weights random')
    else:
        choice = choose_weights(args.clipseg_model, allow_download=not args.no_download)
    if choice.source == 'random' and mode == 'real':
        print(f'No real weights: {choice.detail}.\n\n{fetch_instructions(args.sam_model_type)}',
              file=sys.stderr)
        return None
    if choice.source == 'local':
        pass  # as given: a directory marked random still needs --random-weights
    elif choice.source in ('cache', 'download'):
        params['clipseg_model'] = choice.path
        params['allow_random_weights'] = choice.random and mode == 'auto'
    if choice.source != 'random' and needs_sam and mode == 'auto':
        params['allow_random_weights'] = True  # SAM is not on the hub: random SAM weights
    print(f'Weights: CLIPSeg {choice.source}: {choice.detail}'
          + ('' if choice.download_s is None else f' (download {choice.download_s:.1f} s)')
          + ('; MARKED AS RANDOM WEIGHTS' if choice.random and choice.source != 'random'
             else '') + '.', flush=True)
    if choice.source == 'random':
        if mode == 'auto':
            print('No real weights found, so the demo falls back to random weights '
                  '(--weights real exits instead).', flush=True)
        params.update(_random_models(args, output, needs_sam))
        params['allow_random_weights'] = True
    elif needs_sam and mode == 'auto':
        print('No --sam-checkpoint: SAM gets random weights.', flush=True)
        params.update(_random_models(args, output, needs_sam))
    random = params['allow_random_weights']
    weights = {'source': choice.source, 'path': params['clipseg_model'],
               'random': bool(choice.random or random), 'download_s': choice.download_s,
               'detail': choice.detail}
    return {'params': params, 'weights': weights, 'random': bool(random)}


def _random_models(args, output: Path, needs_sam: bool) -> Dict[str, Any]:
    """Generate random models for what is not a local directory; return their parameters."""
    params: Dict[str, Any] = {}
    clipseg_given = Path(args.clipseg_model).expanduser().is_dir()
    if clipseg_given and not needs_sam:
        return params
    print(f'Generating {args.random_size} random-weight models in {output / "models"} ...',
          flush=True)
    made = write_random_models(output / 'models', size=args.random_size,
                               sam_type=None if needs_sam else 'none')
    if not clipseg_given:
        params['clipseg_model'] = made['clipseg']
    if needs_sam:
        params.update(sam_checkpoint=made['sam_checkpoint'],
                      sam_model_type=made['sam_model_type'])
    return params


def _replay_parameters(args, scene: Optional[Path]) -> List[Parameter]:
    source = (Parameter('bag', value=str(args.bag)) if args.bag
              else Parameter('directory', value=str(scene)))
    return [source, Parameter('loop', value=False)]


def run_demo(args) -> int:
    """Run the demo with parsed command-line ``args``; return the exit status."""
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    models = choose_models(args, output)
    if models is None:
        return EXIT_NO_WEIGHTS
    params, random = models['params'], models['random']
    if random:
        _banner(RANDOM_WARNING)
    if args.bag:
        scene = Path(args.bag)
    elif args.scene:
        scene = Path(args.scene)
    else:
        scene = make_demo_scene(output / 'scene', frames=args.frames)
        print(f'Wrote the demo scene ({args.frames} frames) to {scene}', flush=True)

    context = Context()
    rclpy.init(context=context, domain_id=args.domain_id)
    nodes = []
    executor = spinner = None
    try:
        replay = ReplayPublisher(context=context, autostart=False,
                                 parameter_overrides=_replay_parameters(args, scene))
        nodes.append(replay)
        try:
            perception = PerceptionNode(context=context, parameter_overrides=[
                Parameter(k, value=v) for k, v in params.items()])
        except ModelLoadError as err:
            print(f'\nCould not load the models: {err}\n\n'
                  f'{fetch_instructions(params["sam_model_type"])}', file=sys.stderr)
            return EXIT_NO_WEIGHTS
        nodes.append(perception)
        recorder_node = None
        if args.record:
            recorder_node = OutputRecorder(context=context, parameter_overrides=[
                Parameter('output', value=str(args.record)),
                Parameter('node', value=perception.get_fully_qualified_name())])
            nodes.append(recorder_node)
        client = rclpy.create_node('zs_demo', context=context)
        nodes.append(client)
        recorder = _Recorder()
        base = perception.get_fully_qualified_name()
        client.create_subscription(SegmentedObjectArray, f'{base}/objects',
                                   recorder.on_objects, 10)
        # Subscribing to the overlay is what makes the node draw it.
        client.create_subscription(Image, f'{base}/debug_image', recorder.on_overlay, 10)
        goal_pub = client.create_publisher(String, 'goal', GOAL_QOS)
        goal_pub.publish(String(data=args.goal))

        executor = SingleThreadedExecutor(context=context)
        for node in nodes:
            executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()

        if not _wait_until(lambda: all(replay.subscription_counts().values())
                           and perception.counters['goals_received'] > 0
                           and (recorder_node is None
                                or len(recorder_node.recording()) >= _RECORDED_AT_LEAST),
                           30.0):
            print('The perception node did not connect to the replay topics and the goal '
                  'within 30 s; is another process using this ROS domain? Try --domain-id.',
                  file=sys.stderr)
            return EXIT_INCOMPLETE
        frames = []
        for index in range(len(replay)):
            header = replay.publish_next()
            key = _key(header)
            result = recorder.wait(recorder.objects, key, args.frame_timeout)
            if result is None:
                print(f'frame {index}: no result within {args.frame_timeout} s', flush=True)
                frames.append({'index': index, 'stamp': {'sec': key[0], 'nanosec': key[1]},
                               'objects': None})
                continue
            overlay = recorder.wait(recorder.overlays, key, 5.0)
            entry = {'index': index, 'name': replay.frame_name(index),
                     'stamp': {'sec': key[0], 'nanosec': key[1]},
                     'prompts': list(result.prompts), 'backend': result.backend,
                     'objects': [object_summary(o) for o in result.objects], 'overlay': None}
            if overlay is not None:
                path = output / f'overlay_{index:06d}.png'
                bgr = cv2.cvtColor(image_to_rgb(overlay), cv2.COLOR_RGB2BGR)
                if random:
                    _stamp_random_warning(bgr)
                if not cv2.imwrite(str(path), bgr):
                    raise OSError(f'Could not write {path}; is {output} writable?')
                entry['overlay'] = path.name
            frames.append(entry)
            print(f'frame {index}: {_frame_line(entry["objects"])}', flush=True)
    finally:
        if executor is not None:
            executor.shutdown()
        if spinner is not None:
            spinner.join(timeout=5.0)  # no callback may run on a node being destroyed
        for node in reversed(nodes):
            node.destroy_node()
        rclpy.try_shutdown(context=context)

    complete = all(f['objects'] is not None for f in frames)
    summary = {
        'random_weights': random,
        'warning': RANDOM_WARNING if random else None,
        'weights': models['weights'],
        'goal': args.goal, 'scene': str(scene), 'models': params,
        'recorded': str(args.record) if args.record else None,
        'frames_played': len(frames),
        'frames_with_result': sum(f['objects'] is not None for f in frames),
        'frames': frames,
    }
    (output / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    print(f'Wrote {summary["frames_with_result"]} overlays and summary.json to {output}'
          + (f'; the outputs were recorded to {args.record}' if args.record else ''))
    if random:
        _banner(RANDOM_WARNING)
    return 0 if complete else EXIT_INCOMPLETE


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the demo's command line."""
    parser = argparse.ArgumentParser(
        prog='zs_perception_demo', description=__doc__.split('\n\n')[0],
        epilog='Output: overlay PNGs and summary.json in --output.')
    parser.add_argument('--output', default='demo_output',
                        help='directory for overlays and summary.json (default demo_output)')
    parser.add_argument('--scene', default=None,
                        help='replay directory to play (default: generate the demo scene)')
    parser.add_argument('--bag', default=None,
                        help='rosbag2 (directory, .mcap or .db3) to play instead of a scene; '
                             'its image, depth and camera_info topics are found by type')
    parser.add_argument('--record', default=None,
                        help='record every output of the node to this new MCAP bag')
    parser.add_argument('--frames', type=int, default=5,
                        help='frames of the generated demo scene (default 5)')
    parser.add_argument('--goal', default=DEFAULT_GOAL,
                        help=f'goal phrases, comma separated (default {DEFAULT_GOAL!r})')
    parser.add_argument('--backend', default=config.SPECS['backend'].default,
                        help='segmentation backend (default %(default)s)')
    parser.add_argument('--clipseg-model', default=config.SPECS['clipseg_model'].default,
                        help='CLIPSeg weights: local directory or cached hub id '
                             '(default %(default)s)')
    parser.add_argument('--sam-checkpoint', default='',
                        help='Segment Anything checkpoint (.pth)')
    parser.add_argument('--sam-model-type', default=config.SPECS['sam_model_type'].default,
                        help='SAM architecture of --sam-checkpoint (default %(default)s)')
    parser.add_argument('--device', default='auto', help='torch device (default auto)')
    parser.add_argument('--weights', choices=WEIGHT_MODES, default='auto',
                        help='auto: real weights from the cache or the hub, else random; '
                             'real: exit 2 without real weights; random: random weights '
                             '(default %(default)s)')
    parser.add_argument('--no-download', action='store_true',
                        help='do not download weights from the hub (cache only)')
    parser.add_argument('--random-weights', action='store_true',
                        help='the same as --weights random: results are MEANINGLESS')
    parser.add_argument('--random-size', choices=SIZES, default='tiny',
                        help='size of generated random models (default tiny)')
    parser.add_argument('--frame-timeout', type=float, default=600.0,
                        help='seconds to wait for the result of one frame (default 600)')
    parser.add_argument('--domain-id', type=int, default=None,
                        help='ROS domain id of the demo graph (default: ROS_DOMAIN_ID or 0)')
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error(f'--frames must be at least 1, got {args.frames}')
    if args.bag and args.scene:
        parser.error('give --scene or --bag, not both')
    return args


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    try:
        return run_demo(parse_args(argv))
    except KeyboardInterrupt:
        return 130
