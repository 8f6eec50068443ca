"""Annotation file formats without models: COCO RLE, YOLO polygons, vocabularies, sources."""

import json

import cv2
import numpy as np
from pycocotools.coco import COCO
import pytest

from zs_perception.annotation import coco, yolo
from zs_perception.annotation.progress import format_duration, Progress
from zs_perception.annotation.sources import open_source
from zs_perception.annotation.storage import atomic_write, read_json, remove_stale_temporaries
from zs_perception.annotation.storage import write_json
from zs_perception.annotation.tagging import parse_vocabulary, read_vocabulary_file


def border_band(mask):
    """Pixels within one pixel of the mask's border, inside or outside (8-neighbourhood)."""
    kernel = np.ones((3, 3), np.uint8)
    m = mask.astype(np.uint8)
    grown = cv2.dilate(m, kernel).astype(bool)
    shrunk = cv2.erode(m, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    return grown & ~shrunk


def rasterise(lines, width, height):
    """Union of YOLO label lines (class x y ...) drawn with cv2.fillPoly, per class."""
    out = {}
    for line in lines:
        values = line.split()
        points = np.array([float(v) for v in values[1:]]).reshape(-1, 2) * [width, height]
        canvas = out.setdefault(int(values[0]), np.zeros((height, width), np.uint8))
        cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1)
    return {k: v.astype(bool) for k, v in out.items()}


def shapes(seed):
    """Masks drawn by OpenCV primitives (an independent generator): blobs, rings, lines, noise."""
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(8, 140, 2))
    mask = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        kind = rng.integers(0, 4)
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(1, 50)), int(rng.integers(1, 50)))
        if kind == 0:
            cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        elif kind == 1:  # a ring: a hole
            cv2.ellipse(mask, centre, axes, 0.0, 0, 360, 1, int(rng.integers(1, 6)))
        elif kind == 2:
            end = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(mask, centre, end, 1, int(rng.integers(1, 4)))
        else:
            cv2.rectangle(mask, centre, (centre[0] + axes[0], centre[1] + axes[1]), 0, -1)
    if seed % 4 == 0:
        mask[rng.random(mask.shape) < 0.03] ^= 1
    return mask.astype(bool)


def test_rle_round_trips_and_coco_api_loads(tmp_path):
    rng = np.random.default_rng(0)
    masks = [rng.random((37, 53)) < 0.4, np.zeros((37, 53), bool), np.ones((37, 53), bool)]
    masks[1][5:9, 50:53] = True
    instances = []
    for k, mask in enumerate(masks):
        rle = coco.encode_mask(mask)
        assert np.array_equal(coco.decode_mask(rle), mask)
        area, bbox = coco.mask_area_and_box(rle)
        instances.append({'label': ['a', 'b'][k % 2], 'score': 0.5, 'segmentation': rle,
                          'area': area, 'bbox': bbox})
    assert instances[1]['bbox'] == [50.0, 5.0, 3.0, 4.0] and instances[1]['area'] == 12
    records = [{'file_name': 'x.png', 'width': 53, 'height': 37, 'instances': instances,
                'tags': ['a']}]
    path = tmp_path / 'c.json'
    write_json(path, coco.build_coco(records, ['a', 'b'], {'description': 't'}))
    api = COCO(str(path))
    anns = api.loadAnns(api.getAnnIds(imgIds=[1]))
    assert [a['category_id'] for a in anns] == [1, 2, 1]
    for ann, mask in zip(anns, masks):
        assert np.array_equal(api.annToMask(ann).astype(bool), mask)
    with pytest.raises(ValueError, match='not one of the categories'):
        coco.build_coco(records, ['a'], {})
    with pytest.raises(ValueError, match=r'\(H, W\)'):
        coco.encode_mask(np.zeros((2, 2, 2), bool))


@pytest.mark.parametrize('seed', range(60))
def test_polygons_rasterise_back_within_one_pixel(seed):
    mask = shapes(seed)
    height, width = mask.shape
    polygons = yolo.mask_to_polygons(mask)
    instance = {'label': 'x', 'polygons': yolo.normalize_polygons(polygons, width, height)}
    text = yolo.label_lines([instance], {'x': 0})
    lines = text.splitlines()
    assert len(lines) == len(polygons)
    for line in lines:
        coords = [float(v) for v in line.split()[1:]]
        assert len(coords) >= 6 and len(coords) % 2 == 0
        assert all(0.0 <= v <= 1.0 for v in coords)
    drawn = rasterise(lines, width, height).get(0, np.zeros_like(mask))
    wrong = drawn ^ mask
    assert not (wrong & ~border_band(mask)).any(), f'{int(wrong.sum())} pixels differ'


def test_holes_stay_holes_and_parts_are_lines():
    mask = np.zeros((60, 90), bool)
    mask[5:55, 5:55] = True
    mask[15:25, 15:25] = False  # two holes
    mask[30:45, 30:48] = False
    mask[20:30, 70:85] = True  # a second part
    polygons = yolo.mask_to_polygons(mask)
    assert len(polygons) == 2
    drawn = np.zeros(mask.shape, bool)
    for poly in yolo.normalize_polygons(polygons, 90, 60):
        drawn |= yolo.polygon_to_mask(poly, 90, 60)
    assert np.array_equal(drawn, mask)
    assert yolo.mask_to_polygons(np.zeros((4, 4), bool)) == []
    single = np.zeros((5, 5), bool)
    single[2, 2] = True
    assert yolo.mask_to_polygons(single)[0].shape == (3, 2)


def test_dataset_yaml_lists_names_in_order(tmp_path):
    import yaml

    yolo.write_dataset_yaml(tmp_path, ['mug', 'power drill'])
    data = yaml.safe_load((tmp_path / 'data.yaml').read_text())
    assert data['names'] == {0: 'mug', 1: 'power drill'}
    assert data['train'] == 'images' and data['path'] == str(tmp_path.resolve())


def test_vocabulary_parsing(tmp_path):
    assert parse_vocabulary(' mug, red  cup;Mug\n# a comment\nbottle # tail\n\n') == [
        'mug', 'red cup', 'bottle']
    assert parse_vocabulary('') == []
    path = tmp_path / 'v.txt'
    path.write_text('chair\ntable, lamp\n')
    assert read_vocabulary_file(path) == ['chair', 'table', 'lamp']
    with pytest.raises(ValueError, match='Cannot read the vocabulary file'):
        read_vocabulary_file(tmp_path / 'missing.txt')


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / 'r.json'
    write_json(path, {'a': 1})

    def fail(tmp):
        tmp.write_text('{"a": 2, "b"')  # half written, then the writer dies
        raise OSError('disk full')

    with pytest.raises(OSError, match='disk full'):
        atomic_write(path, fail)
    assert read_json(path) == {'a': 1}
    assert [p.name for p in tmp_path.iterdir()] == ['r.json']
    (tmp_path / '.x.json.tmp-123.json').write_text('{')
    assert remove_stale_temporaries(tmp_path) == 1
    assert read_json(tmp_path / 'missing.json') is None


def test_folder_source_keys_order_and_exclusions(tmp_path):
    img = np.zeros((4, 4, 3), np.uint8)
    for rel in ('b.png', 'a/x.png', 'a/x.jpg', 'a__x.png', '.hidden/y.png', 'out/z.png'):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / rel), img)
    (tmp_path / 'notes.txt').write_text('x')
    source = open_source(tmp_path, exclude=tmp_path / 'out')
    assert source.kind == 'folder'
    assert [i.file_name for i in source.items] == ['a/x.jpg', 'a/x.png', 'a__x.png', 'b.png']
    keys = [i.key for i in source.items]
    assert len(set(keys)) == len(keys) and keys[-1] == 'b'
    assert source.ignored == ('notes.txt',)
    assert source.items[-1].read().rgb.shape == (4, 4, 3)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='holds no image'):
        open_source(tmp_path / 'empty')
    bag = tmp_path / 'bag'
    bag.mkdir()
    (bag / 'metadata.yaml').write_text('rosbag2_bagfile_information: {}')
    with pytest.raises(ValueError, match='rosbag2'):
        open_source(bag)
    with pytest.raises(ValueError, match='Unknown input kind'):
        open_source(tmp_path, kind='bag')


def test_progress_line_counts_rate_and_time_left():
    now = [0.0]
    lines = []

    class Stream:

        def write(self, text):
            lines.append(text)

        def flush(self):
            pass

    progress = Progress(10, already=2, stream=Stream(), clock=lambda: now[0])
    now[0] = 4.0
    progress.update(done=2)
    progress.update(skipped=1)
    text = progress.line()
    assert text.startswith('annotate 5/10 (50%) 0.50 img/s, 0:00:10 left, 1 skipped')
    assert '2 from the earlier run' in text
    progress.close()
    assert lines and lines[-1].endswith('\n')
    assert format_duration(3725) == '1:02:05' and format_duration(None) == '?'


def test_record_json_is_plain_json(tmp_path):
    # What annotate writes per image must load with the standard library alone.
    mask = np.zeros((6, 8), bool)
    mask[1:4, 2:6] = True
    rle = coco.encode_mask(mask)
    write_json(tmp_path / 'r.json', {'segmentation': rle})
    assert json.loads((tmp_path / 'r.json').read_text())['segmentation'] == rle
