"""The annotation command end to end on tiny random models and folders the tests make.

Tiny random models find random things; the thresholds are set low so that masks exist, and
every check is against what the run really wrote (and what the engine returns for the same
image when called directly).
"""

from html.parser import HTMLParser
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
from pycocotools.coco import COCO
import pytest
import yaml

from zs_perception.annotation.run import annotate, AnnotateConfig, COCO_FILE, main, MANIFEST
from zs_perception.annotation.run import RECORDS, SHEET, UsageError

VOCABULARY = ['mug', 'bottle', 'box']
BROKEN = {'empty.png': b'', 'text.jpg': b'this is not a jpeg',
          'cut.png': None}  # None: a real PNG cut in half


def make_folder(root: Path, count: int, size=(96, 128), seed=0) -> Path:
    """Write ``count`` images (shapes on textured backgrounds) and the broken files."""
    rng = np.random.default_rng(seed)
    height, width = size
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        img = rng.integers(40, 120, (height, width, 3)).astype(np.uint8)
        for _ in range(3):
            colour = tuple(int(c) for c in rng.integers(0, 255, 3))
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.circle(img, centre, int(rng.integers(8, height // 3)), colour, -1)
        sub = root / ('nested' if i % 3 == 2 else '')
        sub.mkdir(exist_ok=True)
        cv2.imwrite(str(sub / f'frame_{i:03d}.{"jpg" if i % 4 == 3 else "png"}'), img)
    for name, data in BROKEN.items():
        if data is None:
            ok, png = cv2.imencode('.png', np.zeros((40, 40, 3), np.uint8) + 7)
            data = png.tobytes()[:len(png) // 2]
        (root / name).write_bytes(data)
    (root / 'README.txt').write_text('not an image')
    return root


def config(tiny_models, folder, output, **overrides):
    settings = {
        'input_path': str(folder), 'output': str(output), 'vocabulary': list(VOCABULARY),
        'engine': {'clipseg_model': str(tiny_models / 'clipseg'), 'device': 'cpu',
                   'allow_random_weights': True, 'threshold': 0.5, 'min_area_px': 8,
                   'max_objects': 12},
        'progress': False}
    settings.update(overrides)
    return AnnotateConfig(**settings)


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp('annotate_in'), 6)


@pytest.fixture(scope='module')
def finished(tiny_models, folder, tmp_path_factory):
    """Run over ``folder`` without interruption; return ``(output folder, summary)``."""
    out = tmp_path_factory.mktemp('annotate_out') / 'run'
    return out, annotate(config(tiny_models, folder, out))


def load_coco(out: Path) -> COCO:
    return COCO(str(out / COCO_FILE))


def test_coco_loads_and_masks_round_trip_bit_for_bit(tiny_models, folder, finished):
    from zs_perception.segmentation.factory import create_segmenter

    out, summary = finished
    assert summary.status == 'complete' and summary.annotated == 6
    api = load_coco(out)
    assert [c['name'] for c in api.loadCats(api.getCatIds())] == VOCABULARY
    assert len(api.getAnnIds()) == summary.instances > 0
    seg = create_segmenter('clipseg', clipseg_model=str(tiny_models / 'clipseg'), device='cpu',
                           allow_random_weights=True, threshold=0.5, min_area_px=8,
                           max_objects=12)
    seg.set_prompts(VOCABULARY)
    for image in api.loadImgs(api.getImgIds()):
        rgb = cv2.cvtColor(cv2.imread(str(folder / image['file_name'])), cv2.COLOR_BGR2RGB)
        assert (image['height'], image['width']) == rgb.shape[:2]
        expected = seg.segment(rgb).instances
        anns = api.loadAnns(api.getAnnIds(imgIds=[image['id']]))
        assert len(anns) == len(expected)
        for ann, inst in zip(anns, expected):
            assert np.array_equal(api.annToMask(ann).astype(bool), inst.mask)
            assert api.loadCats(ann['category_id'])[0]['name'] == inst.label
            assert ann['score'] == pytest.approx(inst.score, abs=1e-6)
            assert ann['area'] == int(inst.mask.sum())
            x, y, w, h = ann['bbox']
            assert [x, y, x + w, y + h] == [float(v) for v in inst.box]


def test_yolo_polygons_rasterise_to_the_masks_within_one_pixel(finished):
    from test_annotation_formats import border_band, rasterise

    out, _ = finished
    data = yaml.safe_load((out / 'yolo' / 'data.yaml').read_text())
    assert data['names'] == dict(enumerate(VOCABULARY))
    api = load_coco(out)
    images = sorted((out / 'yolo' / 'images').iterdir())
    assert len(images) == 6
    for image in api.loadImgs(api.getImgIds()):
        key = json.loads(next(
            p for p in (out / RECORDS).iterdir()
            if json.loads(p.read_text())['file_name'] == image['file_name']).read_text())['key']
        assert (out / 'yolo' / 'images' / (key + Path(image['file_name']).suffix)).is_file()
        lines = (out / 'yolo' / 'labels' / f'{key}.txt').read_text().splitlines()
        drawn = rasterise(lines, image['width'], image['height'])
        anns = api.loadAnns(api.getAnnIds(imgIds=[image['id']]))
        for class_id, name in data['names'].items():
            truth = np.zeros((image['height'], image['width']), bool)
            for ann in anns:
                if api.loadCats(ann['category_id'])[0]['name'] == name:
                    truth |= api.annToMask(ann).astype(bool)
            got = drawn.get(class_id, np.zeros_like(truth))
            assert not ((got ^ truth) & ~border_band(truth)).any(), (key, name)


class _Sheet(HTMLParser):

    def __init__(self):
        super().__init__()
        self.images, self.text = [], []

    def handle_starttag(self, tag, attrs):
        if tag == 'img':
            self.images.append(dict(attrs)['src'])

    def handle_data(self, data):
        self.text.append(data)


def test_contact_sheet_shows_every_image_and_the_skipped_files(finished):
    out, summary = finished
    sheet = _Sheet()
    sheet.feed((out / SHEET).read_text())
    api = load_coco(out)
    records = [json.loads(p.read_text()) for p in (out / RECORDS).iterdir()]
    assert sorted(sheet.images) == sorted(f'overlays/{r["key"]}.png' for r in records)
    assert len(sheet.images) == len(api.getImgIds())
    for src, record in zip(sorted(sheet.images), sorted(records, key=lambda r: r['key'])):
        overlay = cv2.imread(str(out / src))
        assert overlay.shape[:2] == (record['height'], record['width'])
    text = ' '.join(sheet.text)
    for name in BROKEN:
        assert name in text
    for name in VOCABULARY:  # the category table counts what the COCO file holds
        count = len(api.getAnnIds(catIds=api.getCatIds(catNms=[name])))
        assert f'{name} {count} ' in ' '.join(text.split())


def test_unreadable_files_are_skipped_and_listed_with_the_reason(finished):
    out, summary = finished
    manifest = json.loads((out / MANIFEST).read_text())
    skipped = {s['file_name']: s for s in manifest['skipped']}
    assert set(skipped) == set(BROKEN)
    assert all(s['stage'] == 'read' and 'Cannot decode' in s['reason']
               for s in skipped.values())
    assert manifest['counts'] == {'images': 9, 'annotated': 6, 'skipped': 3,
                                  'instances': summary.instances, 'ignored_files': 1}
    assert manifest['ignored_files'] == ['README.txt']
    names = {i['file_name'] for i in load_coco(out).loadImgs(load_coco(out).getImgIds())}
    assert not names & set(BROKEN)


def _outputs(out: Path):
    """Return what a run wrote, minus what differs between runs by right (times, dates)."""
    doc = json.loads((out / COCO_FILE).read_text())
    doc.pop('info')
    records = {}
    for path in (out / RECORDS).iterdir():
        record = json.loads(path.read_text())
        record.pop('seconds')
        records[path.name] = record
    labels = {p.name: p.read_text() for p in (out / 'yolo' / 'labels').iterdir()}
    dataset = yaml.safe_load((out / 'yolo' / 'data.yaml').read_text())
    dataset.pop('path')  # the output folder itself
    return doc, records, labels, dataset


def test_resume_after_an_interruption_equals_an_uninterrupted_run(tiny_models, folder,
                                                                  finished, tmp_path):
    out = tmp_path / 'run'
    done = []

    def interrupt_after_two(key):
        done.append(key)
        if len(done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        annotate(config(tiny_models, folder, out, batch_size=3), on_image=interrupt_after_two)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest['status'] == 'interrupted'
    kept = {p.name: p.stat().st_mtime_ns for p in (out / RECORDS).iterdir()}
    # Images whose writing was under way when the interruption came are finished, not lost.
    assert len(done) == 2 and 2 <= len(kept) <= 2 + 3
    assert len(json.loads((out / COCO_FILE).read_text())['images']) == len(kept)

    summary = annotate(config(tiny_models, folder, out, batch_size=3))
    assert summary.status == 'complete' and summary.resumed == len(kept)
    assert all((out / RECORDS / name).stat().st_mtime_ns == ns for name, ns in kept.items())
    assert _outputs(out) == _outputs(finished[0])
    again = annotate(config(tiny_models, folder, out))  # nothing left: nothing redone
    assert again.resumed == 6 and again.annotated == 6


def _start_and_wait(args, records: Path, count: int) -> subprocess.Popen:
    """Start the command; return once ``count`` records exist (failing if it ends first)."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if records.is_dir() and len(list(records.glob('[!.]*.json'))) >= count:
            break
        time.sleep(0.02)
    assert proc.poll() is None, 'the run ended before it could be stopped: ' + \
        proc.stderr.read().decode()
    return proc


def test_terminated_then_killed_process_loses_nothing_and_resumes(tiny_models, tmp_path):
    src = make_folder(tmp_path / 'many', 24, size=(120, 160), seed=3)
    out = tmp_path / 'run'
    args = [sys.executable, '-m', 'zs_perception.annotation', str(src), '-o', str(out),
            '--vocabulary', ','.join(VOCABULARY), '--clipseg-model',
            str(tiny_models / 'clipseg'), '--device', 'cpu', '--allow-random-weights',
            '--threshold', '0.5', '--min-area-px', '8', '--max-objects', '12',
            '--batch-size', '2', '-q']
    proc = _start_and_wait(args, out / RECORDS, 2)
    proc.send_signal(signal.SIGTERM)  # graceful: in-flight images finish, files rebuilt
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and b'Run the same command again to resume' in err
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest['status'] == 'interrupted'
    first = len(list((out / RECORDS).glob('[!.]*.json')))
    assert len(json.loads((out / COCO_FILE).read_text())['images']) == first

    proc = _start_and_wait(args, out / RECORDS, first + 2)  # resumes, then is killed
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = sorted((out / RECORDS).glob('[!.]*.json'))  # not a temporary file being written
    assert first + 2 <= len(written) < 24
    for path in written:  # every record there is whole
        assert json.loads(path.read_text())['file_name']
    mtimes = {p.name: p.stat().st_mtime_ns for p in written}

    resumed = annotate(config(tiny_models, src, out, batch_size=2))
    assert resumed.status == 'complete' and resumed.resumed == len(written)
    assert all((out / RECORDS / n).stat().st_mtime_ns == ns for n, ns in mtimes.items())
    assert not [p for p in out.rglob('*') if '.tmp-' in p.name]
    reference = annotate(config(tiny_models, src, tmp_path / 'reference'))
    assert _outputs(out) == _outputs(tmp_path / 'reference')
    assert reference.instances == resumed.instances


def test_empty_vocabulary_without_tagging_is_one_line_exit_2(tmp_path, folder, capsys):
    code = main([str(folder), '-o', str(tmp_path / 'o'), '--no-tagging', '--no-progress'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert '--vocabulary' in err[0] and '--no-tagging' in err[0]
    assert not (tmp_path / 'o').exists()
    (tmp_path / 'other').mkdir()
    (tmp_path / 'other' / 'keep.txt').write_text('x')
    assert main([str(folder), '-o', str(tmp_path / 'other'), '--vocabulary', 'mug']) == 2
    assert 'not empty' in capsys.readouterr().err
    assert (tmp_path / 'other' / 'keep.txt').exists()
    assert main([str(folder), '-o', str(tmp_path / 'p'), '--vocabulary', 'mug',
                 '--threshold', '1.5']) == 2
    assert '--threshold' in capsys.readouterr().err
    assert main([str(folder), '-o', str(tmp_path / 'p'), '--vocabulary', 'mug',
                 '--set', 'stability_iou']) == 2
    assert 'NAME=NUMBER' in capsys.readouterr().err
    assert main([str(folder), '-o', str(tmp_path / 'q'), '--vocabulary', 'mug', '-q',
                 '--clipseg-model', str(tmp_path / 'no_such_model')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('zs_perception_annotate: error: ') and 'no_such_model' in err[-1]
    assert json.loads((tmp_path / 'q' / MANIFEST).read_text())['status'] == 'failed'


def test_other_settings_in_the_same_output_are_refused(tiny_models, folder, finished):
    out, _ = finished
    with pytest.raises(UsageError, match='engine.threshold'):
        annotate(config(tiny_models, folder, out, engine=dict(
            config(tiny_models, folder, out).engine, threshold=0.3)))


def test_tags_become_the_prompts(tiny_models, backend_models, tmp_path):
    from zs_perception.segmentation.factory import create_segmenter

    src = make_folder(tmp_path / 'in', 2, seed=5)
    tag_vocabulary = ['mug', 'chair', 'floor', 'bottle']
    engine = {'clipseg_model': str(tiny_models / 'clipseg'), 'device': 'cpu',
              'allow_random_weights': True, 'threshold': 0.5, 'min_area_px': 8,
              'max_objects': 12, 'sam_checkpoint': str(tiny_models / 'sam_tiny.pth'),
              'sam_model_type': 'tiny', 'clip_model': backend_models['clip']}
    loose = {'mask_quality_iou': 0.0, 'stability_iou': 0.0, 'nms_iou': 0.3}
    summary = annotate(AnnotateConfig(
        input_path=str(src), output=str(tmp_path / 'out'), tag_vocabulary=tag_vocabulary,
        tag_threshold=0.0, max_tags=2, engine=engine, tagger_thresholds=loose,
        progress=False))
    assert summary.annotated == 2
    manifest = json.loads((tmp_path / 'out' / MANIFEST).read_text())
    assert manifest['categories'] == tag_vocabulary
    tagger = create_segmenter('zero_guidance', vocabulary=','.join(tag_vocabulary),
                              **dict(engine, threshold=0.0))
    tagger.set_thresholds(**loose)
    records = [json.loads(p.read_text()) for p in (tmp_path / 'out' / RECORDS).iterdir()]
    assert any(r['tags'] for r in records)
    for record in records:
        rgb = cv2.cvtColor(cv2.imread(str(src / record['file_name'])), cv2.COLOR_BGR2RGB)
        best = {}
        for inst in tagger.segment(rgb).instances:
            best[inst.label] = max(best.get(inst.label, 0.0), inst.score)
        expected = sorted(best, key=lambda label: (-best[label], label))[:2]
        assert record['tags'] == expected
        assert {i['label'] for i in record['instances']} <= set(record['tags'])
    coco = json.loads((tmp_path / 'out' / COCO_FILE).read_text())
    assert all('tags' in image for image in coco['images'])


def test_zero_guidance_backend_tags_by_itself(tiny_models, backend_models, tmp_path):
    src = make_folder(tmp_path / 'in', 2, seed=6)
    engine = {'device': 'cpu', 'allow_random_weights': True, 'threshold': 0.0,
              'min_area_px': 8, 'sam_checkpoint': str(tiny_models / 'sam_tiny.pth'),
              'sam_model_type': 'tiny', 'clip_model': backend_models['clip']}
    summary = annotate(AnnotateConfig(
        input_path=str(src), output=str(tmp_path / 'out'), backend='zero_guidance',
        tag_vocabulary=['mug', 'chair'], engine=engine,
        backend_thresholds={'mask_quality_iou': 0.0, 'stability_iou': 0.0}, progress=False))
    assert summary.instances > 0
    for path in (tmp_path / 'out' / RECORDS).iterdir():
        record = json.loads(path.read_text())
        assert record['tags'] == list(dict.fromkeys(i['label'] for i in record['instances']))
        assert set(record['tags']) <= {'mug', 'chair'}


def test_replay_directory_with_depth_adds_3d_boxes(tiny_models, tmp_path):
    from zs_perception.geometry import estimate_object_geometry
    from zs_perception.replay_directory import ReplayDirectory
    from zs_perception.tools.make_demo_scene import make_demo_scene

    scene = make_demo_scene(tmp_path / 'scene', frames=2, width=160, height=120)
    out = tmp_path / 'out'
    base = config(tiny_models, scene, out)
    summary = annotate(config(tiny_models, scene, out, min_depth_m=0.2, max_depth_m=8.0,
                              engine=dict(base.engine, min_area_px=40)))  # masks with a pose
    assert summary.annotated == 2 and summary.instances > 0
    api = load_coco(out)
    replay = ReplayDirectory(scene)
    poses = 0
    for index, image in enumerate(api.loadImgs(api.getImgIds())):
        frame = replay.load(index)
        assert image['file_name'] == replay.color_paths[index].name
        assert image['depth_file'] == replay.depth_paths[index].name
        assert image['intrinsics']['fx'] == replay.intrinsics.fx
        anns = api.loadAnns(api.getAnnIds(imgIds=[image['id']]))
        masks = [api.annToMask(a).astype(bool) for a in anns]
        expected = estimate_object_geometry(masks, frame.depth_m, replay.intrinsics,
                                            min_depth_m=0.2, max_depth_m=8.0) if masks else []
        for ann, geometry in zip(anns, expected):
            box = ann['box_3d']
            assert box['has_pose'] == geometry.has_pose and box['status'] == geometry.status
            assert np.allclose(box['position'], geometry.position, atol=1e-6)
            assert np.allclose(box['orientation'], geometry.quaternion, atol=1e-6)
            assert np.allclose(box['extents'], geometry.extents, atol=1e-6)
            assert 'REP-103' in box['frame']
            poses += geometry.has_pose
    assert poses > 0


def _shared_data():
    for root in (os.environ.get('ZS_SHARED_DATA'), Path(__file__).resolve().parents[2] /
                 'shared' / 'data', Path('/work/shared/data')):
        if root and Path(root).is_dir():
            return Path(root)
    pytest.skip('shared data not found (set ZS_SHARED_DATA)')


def test_real_photos_and_a_real_rgbd_frame(tiny_models, tmp_path):
    data = _shared_data()
    photos = annotate(config(tiny_models, data / 'rgb', tmp_path / 'photos'))
    assert photos.annotated == len(list((data / 'rgb').glob('*.jpg'))) and not photos.skipped
    load_coco(tmp_path / 'photos')
    frame = annotate(config(tiny_models, data / 'rgbd' / 'tum_office_desk', tmp_path / 'desk'))
    coco = json.loads((tmp_path / 'desk' / COCO_FILE).read_text())
    assert coco['images'][0]['width'] == 640
    assert all('box_3d' in a for a in coco['annotations']) and frame.instances == len(
        coco['annotations'])


def test_command_is_installed_and_core_is_ros_free():
    from ament_index_python.packages import get_package_prefix

    exe = Path(get_package_prefix('zs_perception')) / 'lib' / 'zs_perception' / \
        'zs_perception_annotate'
    assert exe.is_file() and os.access(exe, os.X_OK)
    out = subprocess.run([sys.executable, str(exe), '--help'], capture_output=True, text=True)
    assert out.returncode == 0 and '--vocabulary' in out.stdout
    code = ('import sys, zs_perception.annotation.run\n'
            'print([m for m in sys.modules if m.split(".")[0] == "rclpy"])')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.stdout.strip() == '[]', out.stderr


def test_limit_annotates_part_and_the_rest_later(tiny_models, folder, finished, tmp_path):
    out = tmp_path / 'run'
    part = annotate(config(tiny_models, folder, out, limit=4))  # in order: 2 broken, 2 good
    assert part.status == 'partial' and part.annotated == 2 and len(part.skipped) == 2
    assert json.loads((out / MANIFEST).read_text())['status'] == 'partial'
    rest = annotate(config(tiny_models, folder, out))
    assert rest.status == 'complete' and rest.resumed == 2 and rest.annotated == 6
    assert _outputs(out) == _outputs(finished[0])
