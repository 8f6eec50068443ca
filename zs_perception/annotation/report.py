"""Pictures to review a run: per-image overlays and one HTML contact sheet.

The overlay of an image is the image with each instance's mask tinted, its box and a caption
``label score`` drawn by :func:`zs_perception.visualization.draw_overlay`; the colour is the
category's, the same in every image. The contact sheet (``index.html``, no scripts, no
network) shows the run's settings, a per-category count table, every annotated image's
overlay with its labels underneath (per label: how many, best score; and the tags), and the
files that were skipped with the reason.
"""

import html
from pathlib import Path
from typing import Any, Dict, List, Sequence
from urllib.parse import quote

import cv2
import numpy as np

from zs_perception.annotation.storage import atomic_write, write_text
from zs_perception.visualization import draw_overlay, label_image


def render_overlay(rgb: np.ndarray, masks: Sequence[np.ndarray], boxes: Sequence[np.ndarray],
                   labels: Sequence[str], scores: Sequence[float],
                   colour_ids: Sequence[int]) -> np.ndarray:
    """Draw an image's instances on a copy of it.

    Args:
        rgb: ``(H, W, 3)`` ``uint8`` RGB.
        masks: per instance ``(H, W)`` ``bool``, highest score first.
        boxes: per instance ``[x0, y0, x1, y1]`` pixels, x1/y1 exclusive.
        labels: per instance label.
        scores: per instance score in ``[0, 1]``.
        colour_ids: per instance colour index (the category index).

    Returns:
        ``(H, W, 3)`` ``uint8`` RGB.

    """
    labelled = label_image(list(masks), rgb.shape[:2])
    captions = [f'{label} {score:.2f}' for label, score in zip(labels, scores)]
    return draw_overlay(rgb, labelled, list(boxes), captions, list(colour_ids))


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """Write an ``(H, W, 3)`` ``uint8`` RGB image as PNG, atomically.

    Raises:
        OSError: the file cannot be written.

    """
    def write(tmp: Path) -> None:
        ok, data = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError(f'Could not encode {str(path)!r} as PNG.')
        tmp.write_bytes(data.tobytes())

    return atomic_write(path, write)


def category_counts(records: Sequence[Dict[str, Any]],
                    categories: Sequence[str]) -> List[Dict[str, Any]]:
    """Per category: instances, images with at least one, mean score; in category order."""
    rows = {name: {'category': name, 'instances': 0, 'images': 0, 'score_sum': 0.0}
            for name in categories}
    for record in records:
        seen = set()
        for instance in record['instances']:
            row = rows[instance['label']]
            row['instances'] += 1
            row['score_sum'] += instance['score']
            seen.add(instance['label'])
        for label in seen:
            rows[label]['images'] += 1
    out = []
    for row in rows.values():
        score_sum = row.pop('score_sum')
        row['mean_score'] = round(score_sum / row['instances'], 3) if row['instances'] else None
        out.append(row)
    return out


_STYLE = """
body { font-family: sans-serif; margin: 1em; }
table { border-collapse: collapse; margin-bottom: 1em; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: left; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; width: 320px; }
figure img { width: 320px; height: auto; border: 1px solid #888; }
figcaption { font-size: 12px; word-wrap: break-word; }
.none { color: #999; }
"""


def write_contact_sheet(path: Path, manifest: Dict[str, Any],
                        records: Sequence[Dict[str, Any]], categories: Sequence[str],
                        overlay_dir: str = 'overlays') -> Path:
    """Write the HTML contact sheet of a run.

    Args:
        path: the HTML file (overlays are referenced relative to its directory).
        manifest: the run manifest (settings, counts, skipped files).
        records: per annotated image, in input order.
        categories: category names.
        overlay_dir: folder of the overlays, relative to ``path``'s directory.

    """
    esc = html.escape
    parts = ['<!DOCTYPE html>', '<html><head><meta charset="utf-8">',
             f'<title>Annotation of {esc(str(manifest["input"]))}</title>',
             f'<style>{_STYLE}</style></head><body>',
             f'<h1>Annotation of {esc(str(manifest["input"]))}</h1>']
    counts = manifest['counts']
    parts.append(
        f'<p>{counts["annotated"]} of {counts["images"]} images annotated, '
        f'{counts["instances"]} instances, {counts["skipped"]} skipped; status '
        f'<b>{esc(manifest["status"])}</b>. Files: <a href="annotations.json">COCO JSON</a>, '
        '<a href="yolo/data.yaml">YOLO dataset</a>, <a href="manifest.json">manifest</a>.</p>')
    parts.append('<h2>Settings</h2><table>')
    for name, value in manifest['settings'].items():
        parts.append(f'<tr><th>{esc(name)}</th><td>{esc(_text(value))}</td></tr>')
    parts.append('</table><h2>Categories</h2><table><tr><th>category</th><th>instances</th>'
                 '<th>images</th><th>mean score</th></tr>')
    for row in category_counts(records, categories):
        mean = '' if row['mean_score'] is None else f'{row["mean_score"]:.3f}'
        parts.append(f'<tr><td>{esc(row["category"])}</td><td>{row["instances"]}</td>'
                     f'<td>{row["images"]}</td><td>{mean}</td></tr>')
    parts.append('</table>')
    if manifest['skipped']:
        parts.append('<h2>Skipped files</h2><table><tr><th>file</th><th>reason</th></tr>')
        for item in manifest['skipped']:
            parts.append(f'<tr><td>{esc(item["file_name"])}</td>'
                         f'<td>{esc(item["reason"])}</td></tr>')
        parts.append('</table>')
    parts.append('<h2>Images</h2><div class="grid">')
    for record in records:
        src = quote(f'{overlay_dir}/{record["key"]}.png')
        found = {}
        for instance in record['instances']:  # label -> (count, best score), first seen first
            count, best = found.get(instance['label'], (0, 0.0))
            found[instance['label']] = (count + 1, max(best, instance['score']))
        labels = ', '.join(f'{label} x{count} (best {best:.2f})'
                           for label, (count, best) in found.items())
        caption = [f'<b>{esc(record["file_name"])}</b>',
                   esc(labels) if labels else '<span class="none">nothing found</span>']
        if record.get('tags') is not None:
            caption.append('tags: ' + (esc(', '.join(record['tags'])) or
                                       '<span class="none">none</span>'))
        parts.append(f'<figure><a href="{src}"><img src="{src}" loading="lazy" '
                     f'alt="{esc(record["file_name"])}"></a>'
                     f'<figcaption>{"<br>".join(caption)}</figcaption></figure>')
    parts.append('</div></body></html>')
    return write_text(path, '\n'.join(parts) + '\n')


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ', '.join(str(v) for v in value)
    return '' if value is None else str(value)
