"""The annotation command: images in, COCO + YOLO dataset, overlays and a contact sheet out.

Usage::

    zs_perception_annotate INPUT --output OUT [--vocabulary "mug, bottle" | --vocabulary-file F]
        [--backend clipseg] [--threshold 0.4] [--device auto] ...
    python -m zs_perception.annotation INPUT --output OUT ...

Output folder::

    OUT/manifest.json         settings, categories, counts, skipped files with the reason
    OUT/annotations.json      COCO instance segmentation (RLE masks), see annotation.coco
    OUT/yolo/                 YOLO segmentation dataset, see annotation.yolo
    OUT/overlays/KEY.png      each image with its masks, boxes and labels
    OUT/index.html            contact sheet: every overlay, per-category counts
    OUT/records/KEY.json      one record per finished image (what the files above are built from)

Each image's overlay and record are written atomically as soon as it is done (record last:
an image is finished when its record exists), so an interrupted run (Ctrl-C, SIGTERM, a
crash, a kill) loses nothing already written; running the same command again resumes it,
skipping finished images. The dataset files are rebuilt from the records at the end of each
run, also an interrupted one. Images that cannot be read or segmented are skipped and listed
with the reason in the manifest and the contact sheet.

Everything here is ROS-free; the segmentation engine is used only through
:func:`zs_perception.segmentation.factory.create_segmenter` and the ``Segmenter`` interface.
"""

import argparse
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
import datetime
import hashlib
import json
import logging
from pathlib import Path
import shutil
import signal
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from zs_perception.annotation import coco, yolo
from zs_perception.annotation.progress import format_duration, Progress
from zs_perception.annotation.report import render_overlay, write_contact_sheet, write_png
from zs_perception.annotation.sources import Frame, open_source, Source, SOURCE_KINDS
from zs_perception.annotation.sources import SourceItem
from zs_perception.annotation.storage import FORMAT_VERSION, read_json, remove_stale_temporaries
from zs_perception.annotation.storage import write_json, write_text
from zs_perception.annotation.tagging import parse_vocabulary, read_vocabulary_file, Tagger
from zs_perception.config import SPECS, validate
from zs_perception.segmentation.base import SegmentationError
from zs_perception.segmentation.factory import BACKENDS

MANIFEST = 'manifest.json'
COCO_FILE = 'annotations.json'
SHEET = 'index.html'
RECORDS, OVERLAYS, YOLO = 'records', 'overlays', 'yolo'
TAGGER_BACKEND = 'zero_guidance'
DEFAULT_TAG_THRESHOLD = 0.2
DEFAULT_MAX_TAGS = 10
# Model and threshold settings of create_segmenter, taken over from the node's parameter table.
MODEL_SETTINGS = ('clipseg_model', 'sam_checkpoint', 'sam_model_type', 'detector',
                  'detector_model', 'clip_model', 'device', 'precision', 'allow_random_weights')
THRESHOLD_SETTINGS = ('threshold', 'min_area_px', 'max_objects')
# Settings that change no output: left out of the fingerprint a resumed run must match.
_RUN_ONLY = ('device', 'batch_size', 'limit', 'progress', 'overwrite')
_CAMERA_FRAME = 'camera optical frame (REP-103: x right, y down, z forward)'

logger = logging.getLogger(__name__)


class UsageError(ValueError):
    """The command was given settings it cannot run with; the message says what to pass."""


@dataclass
class AnnotateConfig:
    """Everything a run needs; see :func:`build_parser` for each option's meaning."""

    input_path: str
    output: str
    input_kind: str = 'auto'
    vocabulary: List[str] = field(default_factory=list)
    tagging: bool = True
    tag_vocabulary: List[str] = field(default_factory=list)
    tag_threshold: float = DEFAULT_TAG_THRESHOLD
    max_tags: int = DEFAULT_MAX_TAGS
    backend: str = SPECS['backend'].default
    engine: Dict[str, Any] = field(default_factory=dict)
    backend_thresholds: Dict[str, float] = field(default_factory=dict)
    tagger_thresholds: Dict[str, float] = field(default_factory=dict)
    min_depth_m: float = SPECS['min_depth_m'].default
    max_depth_m: float = SPECS['max_depth_m'].default
    batch_size: int = 1
    limit: Optional[int] = None
    overwrite: bool = False
    progress: bool = True

    def engine_settings(self) -> Dict[str, Any]:
        """Model and threshold settings with the node's defaults filled in."""
        settings = {name: SPECS[name].default for name in MODEL_SETTINGS + THRESHOLD_SETTINGS}
        settings.update(self.engine)
        return settings

    def fingerprint(self) -> Dict[str, Any]:
        """Return the settings that decide the outputs (a resumed run must have the same)."""
        data = asdict(self)
        for name in _RUN_ONLY:
            data.pop(name, None)
        data['engine'] = {k: v for k, v in self.engine_settings().items() if k not in _RUN_ONLY}
        data['input_path'] = str(Path(self.input_path).resolve())
        data.pop('output')
        data['format'] = FORMAT_VERSION
        return data


@dataclass
class Summary:
    """What a run did.

    Attributes:
        output: the output folder.
        status: ``'complete'`` or ``'partial'`` (``--limit``); the manifest also records
            ``'interrupted'`` and ``'failed'`` runs, which raise.
        images: images in the input.
        annotated: images with a record (this run and earlier ones).
        resumed: records found from an earlier run (not redone).
        skipped: ``{'file_name', 'stage', 'reason'}`` per skipped image.
        instances: instances over all records.
        seconds: wall time of this run.

    """

    output: Path
    status: str
    images: int
    annotated: int
    resumed: int
    skipped: List[Dict[str, str]]
    instances: int
    seconds: float


class _Inline:
    """Runs submitted calls at once (``--batch-size 1``): the same interface as a thread pool."""

    def submit(self, fn, *args) -> Future:
        future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: B902 -- delivered through the future, as a pool does
            future.set_exception(exc)
        return future

    def shutdown(self, wait=True, cancel_futures=False):
        pass


class Annotator:
    """The models of a run and what they do to one image.

    Args:
        config: the run's settings.
        categories: the category names (the vocabulary, or the tag vocabulary).

    Raises:
        ValueError: a bad setting (backend, device, threshold, ...).
        ModelLoadError: weights missing or random without ``allow_random_weights``.

    """

    def __init__(self, config: AnnotateConfig, categories: Sequence[str]):
        from zs_perception.segmentation.factory import create_segmenter

        self.config = config
        self.categories = list(categories)
        settings = config.engine_settings()
        tag_words = ','.join(config.tag_vocabulary)
        self.self_tagging = not config.vocabulary and config.backend == TAGGER_BACKEND
        self.segmenter = create_segmenter(config.backend, vocabulary=tag_words, **settings)
        if config.backend_thresholds:
            self.segmenter.set_thresholds(**config.backend_thresholds)
        self.tagger = None
        if not config.vocabulary and not self.self_tagging:
            tagger_settings = dict(settings, threshold=config.tag_threshold)
            tagger = create_segmenter(TAGGER_BACKEND, vocabulary=tag_words, **tagger_settings)
            if config.tagger_thresholds:
                tagger.set_thresholds(**config.tagger_thresholds)
            self.tagger = Tagger(tagger, config.max_tags)
        if config.vocabulary:
            report = self.segmenter.set_prompts(config.vocabulary)
            for prompt, reason in report.dropped:
                logger.warning('Vocabulary: dropped %r (%s).', prompt, reason)
            for label, reason in report.truncated:
                logger.warning('Vocabulary: %r is cut (%s).', label, reason)
        elif self.self_tagging:
            self.segmenter.set_prompts([])

    def segment(self, frame: Frame) -> Dict[str, Any]:
        """Tag (if needed) and segment one image; the raw result for :meth:`finish`."""
        start = time.perf_counter()
        tags = None
        if self.tagger is not None:
            tags = [t.label for t in self.tagger.tag(frame.rgb)]
            self.segmenter.set_prompts(tags)
        if self.tagger is not None and not tags and self.segmenter.needs_prompts:
            instances = []  # nothing tagged: nothing to look for
        else:
            instances = self.segmenter.segment(frame.rgb).instances
        if self.self_tagging:
            tags = list(dict.fromkeys(i.label for i in instances))
        geometry = None
        if frame.depth_m is not None and instances:
            from zs_perception.geometry import estimate_object_geometry

            geometry = estimate_object_geometry(
                [i.mask for i in instances], frame.depth_m, frame.intrinsics,
                min_depth_m=self.config.min_depth_m, max_depth_m=self.config.max_depth_m)
        return {'tags': tags, 'instances': instances, 'geometry': geometry,
                'seconds': time.perf_counter() - start}

    def colour_id(self, label: str) -> int:
        """Colour index of a label: its category index (labels outside the list after it)."""
        if label in self.categories:
            return self.categories.index(label)
        return len(self.categories) + int(hashlib.sha1(label.encode()).hexdigest()[:6], 16)


def finish_image(item: SourceItem, frame: Frame, raw: Dict[str, Any], annotator: Annotator,
                 output: Path, settings_hash: str) -> Dict[str, Any]:
    """Encode one image's instances, write its overlay and then its record (atomically).

    Returns:
        The record: ``key``, ``file_name``, ``width``, ``height``, ``tags`` (or None),
        ``instances`` (``label``, ``score``, ``bbox``, ``area``, ``segmentation`` RLE,
        ``polygons`` for YOLO, ``box_3d`` with depth), and what identifies the run and file.

    """
    height, width = frame.rgb.shape[:2]
    instances = []
    for k, inst in enumerate(raw['instances']):
        rle = coco.encode_mask(inst.mask)
        area, bbox = coco.mask_area_and_box(rle)
        entry = {'label': inst.label, 'score': round(float(inst.score), 6), 'bbox': bbox,
                 'area': area, 'segmentation': rle,
                 'polygons': yolo.normalize_polygons(yolo.mask_to_polygons(inst.mask),
                                                     width, height)}
        if raw['geometry'] is not None:
            entry['box_3d'] = _box_3d(raw['geometry'][k])
        instances.append(entry)
    overlay = render_overlay(frame.rgb, [i.mask for i in raw['instances']],
                             [i.box for i in raw['instances']],
                             [i.label for i in raw['instances']],
                             [i.score for i in raw['instances']],
                             [annotator.colour_id(i.label) for i in raw['instances']])
    write_png(output / OVERLAYS / f'{item.key}.png', overlay)
    stat = item.path.stat()
    record = {'format': FORMAT_VERSION, 'settings_hash': settings_hash, 'key': item.key,
              'file_name': item.file_name, 'source_stat': [stat.st_size, stat.st_mtime_ns],
              'width': width, 'height': height, 'tags': raw['tags'],
              'instances': instances, 'seconds': round(raw['seconds'], 4)}
    if item.depth_file is not None and frame.intrinsics is not None:
        intr = frame.intrinsics
        record['depth_file'] = item.depth_file
        record['intrinsics'] = {'fx': intr.fx, 'fy': intr.fy, 'cx': intr.cx, 'cy': intr.cy}
    write_json(output / RECORDS / f'{item.key}.json', record)
    return record


def _box_3d(geometry) -> Dict[str, Any]:
    def numbers(values):
        return [round(float(v), 6) for v in values]

    return {'frame': _CAMERA_FRAME, 'has_pose': bool(geometry.has_pose),
            'status': geometry.status, 'position': numbers(geometry.position),
            'orientation': numbers(geometry.quaternion), 'extents': numbers(geometry.extents),
            'shape': geometry.shape, 'num_points': int(geometry.num_points),
            'valid_fraction': round(float(geometry.valid_fraction), 6)}


def annotate(config: AnnotateConfig, on_image: Optional[Callable[[str], None]] = None,
             stream=sys.stderr) -> Summary:
    """Run (or resume) an annotation.

    Args:
        config: the settings.
        on_image: called with each image's key once its record is written (in this thread).
        stream: where the progress line goes (``None``: nowhere).

    Returns:
        What was done.

    Raises:
        UsageError: no labels and tagging off, an output folder that is not a run's, or one
            made with other settings.
        FileNotFoundError, ValueError: a missing or malformed input; a bad setting.
        ModelLoadError: weights missing, or random without ``allow_random_weights``.
        KeyboardInterrupt: the run was interrupted; finished images and the dataset files
            built from them are on disk, and running again resumes.

    """
    started = time.perf_counter()
    if not config.vocabulary and not config.tagging:
        raise UsageError(
            'no labels to look for: pass --vocabulary "mug, bottle" or --vocabulary-file FILE, '
            'or drop --no-tagging to tag each image first and use its tags.')
    if int(config.batch_size) < 1:
        raise UsageError(f'--batch-size must be at least 1, got {config.batch_size}.')
    output = Path(config.output)
    source = open_source(config.input_path, config.input_kind, exclude=output)
    fingerprint = config.fingerprint()
    settings_hash = hashlib.sha256(
        json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
    previous = _prepare_output(output, settings_hash, fingerprint, config.overwrite)
    categories = list(config.vocabulary or config.tag_vocabulary or _default_tag_vocabulary())
    created = previous.get('created') if previous else _now()
    items = source.items
    finished = {}
    for item in items:
        record = read_json(output / RECORDS / f'{item.key}.json')
        if _is_current(record, item, settings_hash):
            finished[item.key] = record
    todo = [item for item in items if item.key not in finished]
    if config.limit is not None:
        todo = todo[:max(int(config.limit), 0)]
    resumed = len(finished)
    if resumed:
        logger.info('Resuming: %d of %d images were finished by an earlier run.', resumed,
                    len(items))
    skipped: List[Dict[str, str]] = []
    manifest = _manifest(config, source, categories, settings_hash, created, 'running',
                         finished, skipped)
    write_json(output / MANIFEST, manifest)
    status = 'complete'
    try:
        if todo:
            progress = Progress(len(items), resumed, stream if config.progress else None)
            _process(todo, lambda: Annotator(config, categories), config, output,
                     settings_hash, finished, skipped, progress, on_image)
        if config.limit is not None and len(finished) + len(skipped) < len(items):
            status = 'partial'
    except KeyboardInterrupt:
        status = 'interrupted'
        raise
    except BaseException:
        status = 'failed'  # e.g. weights missing, disk full: the records so far are kept
        raise
    finally:
        _write_outputs(output, config, source, categories, settings_hash, created, status,
                       finished, skipped, started)
    return Summary(output=output, status=status, images=len(items), annotated=len(finished),
                   resumed=resumed, skipped=skipped,
                   instances=sum(len(r['instances']) for r in finished.values()),
                   seconds=time.perf_counter() - started)


def _process(todo, make_annotator, config, output, settings_hash, finished, skipped,
             progress, on_image) -> None:
    """Read ahead, segment here, write behind: ``batch_size`` images in flight each way.

    The models are loaded when the first image has been read (a rerun that only retries
    unreadable files loads none).
    """
    annotator = None
    depth = int(config.batch_size)
    if depth > 1:
        reader = ThreadPoolExecutor(1, thread_name_prefix='annotate_read')
        writer = ThreadPoolExecutor(1, thread_name_prefix='annotate_write')
    else:
        reader = writer = _Inline()
    reads, writes = deque(), deque()
    upcoming = iter(todo)

    def collect(block: bool) -> None:
        while writes and (block or writes[0][1].done()):
            item, future = writes.popleft()
            finished[item.key] = future.result()  # OSError (disk full): stop the run
            progress.update(done=1)
            if on_image is not None:
                on_image(item.key)

    def skip(item, stage, exc) -> None:
        reason = f'{type(exc).__name__}: {exc}'
        skipped.append({'file_name': item.file_name, 'stage': stage, 'reason': reason})
        logger.warning('Skipped %s (%s): %s', item.file_name, stage, reason)
        progress.update(skipped=1)

    try:
        while True:
            while len(reads) < depth:
                item = next(upcoming, None)
                if item is None:
                    break
                reads.append((item, reader.submit(item.read)))
            if not reads:
                break
            item, future = reads.popleft()
            try:
                frame = future.result()
            except (ValueError, OSError) as exc:
                skip(item, 'read', exc)
                continue
            if annotator is None:
                annotator = make_annotator()
            try:
                raw = annotator.segment(frame)
            except (ValueError, SegmentationError) as exc:
                skip(item, 'segment', exc)
                continue
            writes.append((item, writer.submit(finish_image, item, frame, raw, annotator,
                                               output, settings_hash)))
            collect(block=len(writes) >= depth)
        collect(block=True)
    finally:
        for _, future in reads:
            future.cancel()
        reader.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True)
        for item, future in writes:  # written while stopping: keep them
            if future.done() and future.exception() is None:
                finished[item.key] = future.result()
        progress.close()


def _prepare_output(output: Path, settings_hash: str, fingerprint: Dict[str, Any],
                    overwrite: bool) -> Optional[Dict[str, Any]]:
    """Check the output folder; return the earlier run's manifest when resuming."""
    manifest = read_json(output / MANIFEST)
    if output.exists() and not output.is_dir():
        raise UsageError(f'--output {str(output)!r} is a file; pass a folder.')
    if manifest is None and output.is_dir() and any(output.iterdir()):
        raise UsageError(
            f'--output {str(output)!r} is not empty and holds no {MANIFEST} of an annotation '
            'run; pass a new or empty folder (nothing in it is deleted).')
    if manifest is not None and overwrite:
        for name in (RECORDS, OVERLAYS, YOLO):
            shutil.rmtree(output / name, ignore_errors=True)
        for name in (MANIFEST, COCO_FILE, SHEET):
            (output / name).unlink(missing_ok=True)
        return None
    if manifest is not None and manifest.get('settings_hash') != settings_hash:
        old, new = _flat(manifest.get('fingerprint', {})), _flat(fingerprint)
        differs = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise UsageError(
            f'--output {str(output)!r} holds a run made with other settings (differing: '
            f'{", ".join(differs) or "format"}); rerun with the same settings to resume it, pass '
            '--overwrite to start it again, or choose another --output.')
    output.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output)
    return manifest


def _flat(data: Dict[str, Any], prefix: str = '') -> Dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f'{prefix}{key}.'))
        else:
            out[prefix + key] = value
    return out


def _is_current(record, item: SourceItem, settings_hash: str) -> bool:
    if record is None or record.get('settings_hash') != settings_hash \
            or record.get('file_name') != item.file_name:
        return False
    try:
        stat = item.path.stat()
    except OSError:
        return False
    return record.get('source_stat') == [stat.st_size, stat.st_mtime_ns]


def _default_tag_vocabulary() -> List[str]:
    from zs_perception.segmentation.zero_guidance import DEFAULT_VOCABULARY

    return list(DEFAULT_VOCABULARY)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def _manifest(config, source: Source, categories, settings_hash, created, status, finished,
              skipped) -> Dict[str, Any]:
    settings = {'backend': config.backend, **config.engine_settings(),
                'vocabulary': config.vocabulary or None,
                'tagging': None if config.vocabulary else {
                    'backend': TAGGER_BACKEND,
                    'vocabulary': 'default' if not config.tag_vocabulary else 'given',
                    'threshold': config.tag_threshold, 'max_tags': config.max_tags},
                'backend_thresholds': config.backend_thresholds or None,
                'tagger_thresholds': config.tagger_thresholds or None,
                'min_depth_m': config.min_depth_m if source.has_depth else None,
                'max_depth_m': config.max_depth_m if source.has_depth else None}
    instances = sum(len(r['instances']) for r in finished.values())
    return {
        'format': FORMAT_VERSION, 'tool': 'zs_perception_annotate', 'created': created,
        'updated': _now(), 'status': status, 'input': str(Path(config.input_path).resolve()),
        'input_kind': source.kind, 'has_depth': source.has_depth,
        'settings_hash': settings_hash, 'fingerprint': config.fingerprint(),
        'settings': settings, 'categories': list(categories),
        'counts': {'images': len(source.items), 'annotated': len(finished),
                   'skipped': len(skipped), 'instances': instances,
                   'ignored_files': len(source.ignored)},
        'skipped': list(skipped), 'ignored_files': list(source.ignored[:100]),
    }


def _write_outputs(output, config, source, categories, settings_hash, created, status,
                   finished, skipped, started) -> None:
    """Rebuild the manifest, COCO JSON, YOLO dataset and contact sheet from the records."""
    records = [finished[item.key] for item in source.items if item.key in finished]
    names = list(categories)
    for record in records:  # labels outside the vocabulary (none expected) get ids after it
        for instance in record['instances']:
            if instance['label'] not in names:
                names.append(instance['label'])
    manifest = _manifest(config, source, names, settings_hash, created, status, finished,
                         skipped)
    manifest['seconds_this_run'] = round(time.perf_counter() - started, 3)
    info = {'description': f'zs_perception_annotate of {manifest["input"]}',
            'version': str(FORMAT_VERSION), 'date_created': created,
            'contributor': f'zs_perception_annotate, backend {config.backend}'}
    write_json(output / COCO_FILE, coco.build_coco(records, names, info))
    class_ids = {name: i for i, name in enumerate(names)}
    items = {item.key: item for item in source.items}
    for record in records:
        item = items[record['key']]
        yolo.place_image(item.path, output / YOLO / 'images' / f'{item.key}{item.path.suffix}')
        yolo_text = yolo.label_lines(record['instances'], class_ids)
        path = output / YOLO / 'labels' / f'{item.key}.txt'
        if not path.exists() or path.read_text() != yolo_text:
            write_text(path, yolo_text)
    yolo.write_dataset_yaml(output / YOLO, names)
    write_contact_sheet(output / SHEET, manifest, records, names, OVERLAYS)
    write_json(output / MANIFEST, manifest)


def _assignments(values: Sequence[str], option: str) -> Dict[str, float]:
    out = {}
    for text in values:
        name, sep, value = text.partition('=')
        try:
            number = int(value)  # counts must be integers (validate_thresholds)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                number = None
        if not sep or not name.strip() or number is None:
            raise UsageError(f'{option} expects NAME=NUMBER (e.g. {option} stability_iou=0.8), '
                             f'got {text!r}.')
        out[name.strip()] = number
    return out


def build_parser() -> argparse.ArgumentParser:
    """Build the command-line parser (model and threshold defaults: the node's)."""
    parser = argparse.ArgumentParser(
        prog='zs_perception_annotate',
        description='Label a folder of images or a replay directory with an open-vocabulary '
                    'segmentation backend: COCO JSON (RLE masks), YOLO segmentation files, '
                    'overlays and an HTML contact sheet. Rerun the same command to resume.')
    parser.add_argument('input', help='a folder of images (searched recursively) or a replay '
                        'directory (colour, optional depth, camera_info.json)')
    parser.add_argument('--output', '-o', required=True, help='output folder (created)')
    parser.add_argument('--input-kind', choices=SOURCE_KINDS, default='auto',
                        help='auto: a replay directory if it holds camera_info.json or '
                        'intrinsics.json, else a folder')
    labels = parser.add_argument_group('labels')
    labels.add_argument('--vocabulary', default='', help='labels to look for, separated by '
                        'commas or semicolons, e.g. "mug, power drill"')
    labels.add_argument('--vocabulary-file', help='file of labels, one per line (or commas); '
                        '# starts a comment')
    labels.add_argument('--no-tagging', action='store_true',
                        help='without a vocabulary, fail instead of tagging each image first')
    labels.add_argument('--tag-vocabulary', default='',
                        help='labels the tagger chooses from (default: the zero_guidance '
                        'default list of household objects and obstacles)')
    labels.add_argument('--tag-vocabulary-file', help='file of tagger labels')
    labels.add_argument('--tag-threshold', type=float, default=DEFAULT_TAG_THRESHOLD,
                        help='smallest CLIP label probability of a tag, in [0, 1] '
                        f'(default {DEFAULT_TAG_THRESHOLD})')
    labels.add_argument('--max-tags', type=int, default=DEFAULT_MAX_TAGS,
                        help=f'most tags (prompts) per image (default {DEFAULT_MAX_TAGS})')
    engine = parser.add_argument_group('segmentation (defaults: the node parameters)')
    engine.add_argument('--backend', choices=tuple(BACKENDS), default=SPECS['backend'].default,
                        help='; '.join(f'{k}: {v}' for k, v in BACKENDS.items()))
    for name in MODEL_SETTINGS + THRESHOLD_SETTINGS:
        spec = SPECS[name]
        flag = '--' + name.replace('_', '-')
        if spec.kind is bool:
            engine.add_argument(flag, action='store_true', help=spec.description)
        else:
            engine.add_argument(flag, type=spec.kind, default=spec.default,
                                choices=spec.choices, help=spec.description)
    engine.add_argument('--set', action='append', default=[], metavar='NAME=VALUE',
                        help='another run-time threshold of the backend (Segmenter.'
                        'set_thresholds), e.g. --set stability_iou=0.8; repeatable')
    engine.add_argument('--tagger-set', action='append', default=[], metavar='NAME=VALUE',
                        help='a run-time threshold of the zero_guidance tagger, e.g. '
                        '--tagger-set mask_quality_iou=0.7; repeatable')
    for name in ('min_depth_m', 'max_depth_m'):
        engine.add_argument('--' + name.replace('_', '-'), type=float,
                            default=SPECS[name].default, help=SPECS[name].description +
                            ' (replay directories with depth: 3D boxes)')
    run = parser.add_argument_group('run')
    run.add_argument('--batch-size', type=int, default=1,
                     help='images read ahead and written behind while the model runs '
                     '(threads; 1: one image at a time); the segmenter takes one image per call')
    run.add_argument('--limit', type=int, help='process at most this many more images '
                     '(annotated or skipped), in input order')
    run.add_argument('--overwrite', action='store_true',
                     help='start the run in --output again instead of resuming it')
    run.add_argument('--no-progress', action='store_true', help='no progress line on stderr')
    run.add_argument('--quiet', '-q', action='store_true',
                     help='only warnings and errors (and no progress line)')
    return parser


def config_from_args(args: argparse.Namespace) -> AnnotateConfig:
    """Turn parsed options into a config.

    Raises:
        UsageError: an option value is invalid (the message names it and what is allowed).

    """
    engine = {}
    for name in MODEL_SETTINGS + THRESHOLD_SETTINGS:
        value = getattr(args, name)
        reason = validate(name, value)
        if reason is not None:
            raise UsageError(f'--{name.replace("_", "-")}: {reason}.')
        engine[name] = value
    if not 0.0 <= args.tag_threshold <= 1.0:
        raise UsageError(f'--tag-threshold must be in [0, 1], got {args.tag_threshold}.')
    if args.max_tags < 1 or args.batch_size < 1:
        raise UsageError(f'--max-tags and --batch-size must be at least 1, got '
                         f'{args.max_tags} and {args.batch_size}.')
    for name in ('min_depth_m', 'max_depth_m'):
        reason = validate(name, getattr(args, name))
        if reason is not None:
            raise UsageError(f'--{name.replace("_", "-")}: {reason}.')
    if args.min_depth_m >= args.max_depth_m:
        raise UsageError(f'--min-depth-m ({args.min_depth_m}) must be less than --max-depth-m '
                         f'({args.max_depth_m}).')
    vocabulary = parse_vocabulary(args.vocabulary)
    if args.vocabulary_file:
        words = read_vocabulary_file(args.vocabulary_file)
        if not words:
            logger.warning('Vocabulary file %s holds no labels.', args.vocabulary_file)
        vocabulary += [w for w in words if w.casefold() not in
                       {v.casefold() for v in vocabulary}]
    tag_vocabulary = parse_vocabulary(args.tag_vocabulary)
    if args.tag_vocabulary_file:
        tag_vocabulary += read_vocabulary_file(args.tag_vocabulary_file)
    return AnnotateConfig(
        input_path=args.input, output=args.output, input_kind=args.input_kind,
        vocabulary=vocabulary, tagging=not args.no_tagging, tag_vocabulary=tag_vocabulary,
        tag_threshold=args.tag_threshold, max_tags=args.max_tags, backend=args.backend,
        engine=engine, backend_thresholds=_assignments(args.set, '--set'),
        tagger_thresholds=_assignments(args.tagger_set, '--tagger-set'),
        min_depth_m=args.min_depth_m, max_depth_m=args.max_depth_m,
        batch_size=args.batch_size, limit=args.limit, overwrite=args.overwrite,
        progress=not (args.no_progress or args.quiet))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point: 0 done, 2 bad settings, 130 interrupted (resumable)."""
    from zs_perception.segmentation.base import ModelLoadError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format='%(levelname)s %(name)s: %(message)s')
    prog = parser.prog

    def stop(signum, _frame):
        raise KeyboardInterrupt(f'signal {signum}')

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        config = config_from_args(args)
        summary = annotate(config)
    except (UsageError, ModelLoadError, FileNotFoundError, ValueError) as exc:
        print(f'{prog}: error: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'{prog}: interrupted; the finished images are kept in {args.output}. Run the '
              'same command again to resume.', file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f'{prog}: {summary.status}: {summary.annotated} of {summary.images} images annotated '
          f'({summary.resumed} from an earlier run), {summary.instances} instances, '
          f'{len(summary.skipped)} skipped, in {format_duration(summary.seconds)}. Review '
          f'{summary.output / SHEET}; COCO: {summary.output / COCO_FILE}; YOLO: '
          f'{summary.output / YOLO / "data.yaml"}.', file=sys.stderr)
    if summary.skipped:
        print(f'{prog}: skipped files and the reasons are listed in '
              f'{summary.output / MANIFEST}.', file=sys.stderr)
    return 0
