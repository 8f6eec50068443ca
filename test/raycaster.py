"""An independent ray caster for known-answer tests of zs_perception.geometry.

Written for the tests only, from the geometry contract (README, docstrings), not from the
package's own scene (``zs_perception.testing.scene``): analytic ray intersections with a
table plane, a wall behind it, oriented boxes and finite cylinders, seen by a pinhole camera
that looks down at the table. Depth is the optical-axis depth in metres (REP-103 camera
optical frame: x right, y down, z forward), NaN where a ray hits nothing.

World frame: z up, the table is the plane ``z = 0``, the wall is the plane ``y = wall_y``
facing the camera (which looks roughly along +y).
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

CAMERAS = {'vga': (640, 480, 615.0), 'hd': (1280, 720, 910.0)}


@dataclass
class Shape:
    """One object: ``kind`` 'box' or 'cylinder', pose object-to-world, size in metres.

    For a box ``size`` is its three edge lengths along the object x, y, z axes; for a
    cylinder ``size`` is ``(radius, height)`` with its axis the object z axis.
    """

    kind: str
    centre: np.ndarray
    rotation: np.ndarray
    size: np.ndarray

    def extents(self) -> np.ndarray:
        """Edge lengths along the object axes (a cylinder: ``2 r, 2 r, height``)."""
        if self.kind == 'box':
            return np.asarray(self.size, float)
        return np.array([2 * self.size[0], 2 * self.size[0], self.size[1]])


@dataclass
class Scene:
    """A rendered scene: depth, visible and full masks, camera, ground truth per object."""

    depth_m: np.ndarray
    label: np.ndarray  # (H, W) int: object index, -1 table, -2 wall, -3 nothing
    masks: List[np.ndarray]  # visible masks, one per shape
    amodal: List[np.ndarray]  # full silhouettes (ignoring occlusion)
    shapes: List[Shape]
    fx: float
    cx: float
    cy: float
    width: int
    height: int
    r_cw: np.ndarray  # camera from world rotation
    t_cw: np.ndarray  # camera from world translation
    extra: Dict = field(default_factory=dict)

    def pose_in_camera(self, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(position (3,), rotation (3, 3))`` of shape ``k`` in the camera frame."""
        s = self.shapes[k]
        return self.r_cw @ s.centre + self.t_cw, self.r_cw @ s.rotation


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """World rotation ``Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (radians)."""
    cz, sz = np.cos(yaw), np.sin(yaw)
    cy, sy = np.cos(pitch), np.sin(pitch)
    cx, sx = np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1.0]])
    ry = np.array([[cy, 0, sy], [0, 1.0, 0], [-sy, 0, cy]])
    rx = np.array([[1.0, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ ry @ rx


def resting_height(shape: Shape) -> float:
    """Height of the centre above the table for the shape to touch it at its lowest point."""
    if shape.kind == 'box':
        return float(np.sum(np.abs(shape.rotation[2]) * shape.size / 2))
    axis_z = abs(shape.rotation[2, 2])
    r, h = shape.size
    return float(axis_z * h / 2 + r * np.sqrt(max(0.0, 1 - axis_z ** 2)))


def look_down_camera(target: np.ndarray, distance: float, pitch_deg: float, yaw_deg: float):
    """Camera-from-world ``(R, t)`` looking at ``target`` from ``distance``, ``pitch`` down."""
    p, y = np.radians(pitch_deg), np.radians(yaw_deg)
    forward = np.array([np.sin(y) * np.cos(p), np.cos(y) * np.cos(p), -np.sin(p)])
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    r_wc = np.stack([right, down, forward], axis=1)  # columns: camera axes in the world
    centre = target - distance * forward
    r_cw = r_wc.T
    return r_cw, -r_cw @ centre


def _hit_box(rays, centre, rot, size):
    o = -rot.T @ centre  # camera origin in the box frame
    d = rays @ rot  # ray directions in the box frame
    half = np.asarray(size) / 2
    with np.errstate(divide='ignore', invalid='ignore'):
        t1 = (-half - o) / d
        t2 = (half - o) / d
    t_near = np.nanmax(np.minimum(t1, t2), axis=1)
    t_far = np.nanmin(np.maximum(t1, t2), axis=1)
    hit = (t_far >= t_near) & (t_near > 0)
    return np.where(hit, t_near, np.inf)


def _hit_cylinder(rays, centre, rot, size):
    r, h = size
    o = -rot.T @ centre
    d = rays @ rot
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2 * (o[0] * d[:, 0] + o[1] * d[:, 1])
    c = o[0] ** 2 + o[1] ** 2 - r * r
    disc = b * b - 4 * a * c
    best = np.full(len(rays), np.inf)
    with np.errstate(divide='ignore', invalid='ignore'):
        t_side = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
        z_side = o[2] + t_side * d[:, 2]
        ok = (disc >= 0) & (t_side > 0) & (np.abs(z_side) <= h / 2)
        best = np.where(ok, t_side, best)
        for cap in (-h / 2, h / 2):
            t_cap = (cap - o[2]) / d[:, 2]
            x, y = o[0] + t_cap * d[:, 0], o[1] + t_cap * d[:, 1]
            ok = (t_cap > 0) & (x * x + y * y <= r * r) & (t_cap < best)
            best = np.where(ok, t_cap, best)
    return best


def _hit_plane(rays, normal, offset):
    """Rays ``t d`` meeting ``normal . p + offset = 0`` (camera frame)."""
    with np.errstate(divide='ignore', invalid='ignore'):
        t = -offset / (rays @ normal)
    return np.where(t > 0, t, np.inf)


def _corners(shape):
    half = shape.extents() / 2
    signs = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], float)
    return shape.centre + (signs * half) @ shape.rotation.T


def render(shapes: List[Shape], camera: str, r_cw, t_cw, wall_y: Optional[float],
           margin_px: int = 40) -> Scene:
    """Ray-cast ``shapes`` on the table (and the wall at ``wall_y`` unless None).

    Only the pixels within ``margin_px`` of the shapes' projected bounding boxes are cast
    (the rest is NaN depth, label -3): the geometry under test never looks farther than its
    support-plane ring from a mask.
    """
    width, height, fx = CAMERAS[camera]
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    corners = np.concatenate([_corners(s) for s in shapes]) @ r_cw.T + t_cw
    if np.all(corners[:, 2] > 1e-3):
        u = corners[:, 0] / corners[:, 2] * fx + cx
        v = corners[:, 1] / corners[:, 2] * fx + cy
        c0, c1 = int(max(0, u.min() - margin_px)), int(min(width, u.max() + margin_px + 1))
        r0, r1 = int(max(0, v.min() - margin_px)), int(min(height, v.max() + margin_px + 1))
    else:
        c0, c1, r0, r1 = 0, width, 0, height
    label = np.full((height, width), -3, np.int64)
    depth = np.full((height, width), np.nan, np.float32)
    hits_full = [np.zeros((height, width), bool) for _ in shapes]
    if c1 > c0 and r1 > r0:
        uu, vv = np.meshgrid(np.arange(c0, c1, dtype=float), np.arange(r0, r1, dtype=float))
        rays = np.stack([(uu - cx) / fx, (vv - cy) / fx, np.ones_like(uu)], -1).reshape(-1, 3)
        hits = []
        for s in shapes:
            centre, rot = r_cw @ s.centre + t_cw, r_cw @ s.rotation
            fn = _hit_box if s.kind == 'box' else _hit_cylinder
            hits.append(fn(rays, centre, rot, s.size))
        up = r_cw @ np.array([0.0, 0.0, 1.0])
        backgrounds = [_hit_plane(rays, up, -(up @ t_cw))]  # world z = 0
        if wall_y is not None:
            n = r_cw @ np.array([0.0, 1.0, 0.0])
            backgrounds.append(_hit_plane(rays, n, -(n @ t_cw) - wall_y))
        stack = np.stack(hits + backgrounds, axis=0)
        nearest = np.argmin(stack, axis=0)
        t = stack[nearest, np.arange(len(rays))]
        n_obj = len(shapes)
        lab = np.where(nearest < n_obj, nearest, -1 - (nearest - n_obj))
        shape = (r1 - r0, c1 - c0)
        label[r0:r1, c0:c1] = np.where(np.isfinite(t), lab, -3).reshape(shape)
        depth[r0:r1, c0:c1] = np.where(np.isfinite(t), t, np.nan).reshape(shape)
        for k, h in enumerate(hits):
            hits_full[k][r0:r1, c0:c1] = np.isfinite(h).reshape(shape)
    masks = [label == k for k in range(len(shapes))]
    return Scene(depth, label, masks, hits_full, shapes, fx, cx, cy, width, height, r_cw, t_cw)


# ----------------------------------------------------------------------------------------
# Families of the issue


def _box_two_faces(shape, r_cw, t_cw, min_cos=0.1):
    """Whether at least two faces of a box face the camera by more than ``acos(min_cos)``."""
    centre = r_cw @ shape.centre + t_cw
    rot = r_cw @ shape.rotation
    seen = 0
    for axis in range(3):
        for sign in (-1, 1):
            n = sign * rot[:, axis]
            face = centre + n * shape.size[axis] / 2
            if n @ (-face) / np.linalg.norm(face) > min_cos:
                seen += 1
    return seen >= 2


def make_object(family: str, rng) -> Shape:
    """Draw an object of a family: 'box', 'book_flat', 'book_tilted', 'cyl_up', 'cyl_lying'."""
    if family == 'box':
        size = rng.uniform(0.03, 0.40, 3)
        rot = rotation(rng.uniform(-np.pi, np.pi), *np.radians(rng.uniform(-60, 60, 2)))
        return Shape('box', np.zeros(3), rot, size)
    if family.startswith('book'):
        size = np.array([rng.uniform(0.15, 0.30), rng.uniform(0.10, 0.22), 0.02])
        tilt = (0.0, 0.0) if family == 'book_flat' else np.radians(rng.uniform(15, 40, 2))
        tilt = tilt * rng.choice([-1, 1], 2) if family != 'book_flat' else tilt
        rot = rotation(rng.uniform(-np.pi, np.pi), tilt[0], tilt[1])
        return Shape('box', np.zeros(3), rot, size)
    radius = rng.uniform(0.03, 0.06)
    if family == 'cyl_up':
        return Shape('cylinder', np.zeros(3), rotation(rng.uniform(-np.pi, np.pi), 0, 0),
                     np.array([radius, rng.uniform(0.08, 0.25)]))
    return Shape('cylinder', np.zeros(3),
                 rotation(rng.uniform(-np.pi, np.pi), np.pi / 2, 0),
                 np.array([radius, rng.uniform(0.10, 0.25)]))


FAMILIES = ('box', 'book_flat', 'book_tilted', 'cyl_up', 'cyl_lying')


def family_scene(family: str, seed: int, camera: str = 'vga', *, mode: str = 'clean',
                 max_tries: int = 200) -> Scene:
    """One seeded scene of ``family`` with its object (index 0) on a table before a wall.

    ``mode``: 'clean' (fully visible), 'occluded' (a second box in front hides 20-60 % of
    it; ``extra['hidden']`` says how much), 'truncated' (the image border cuts 15-50 % of
    it off; ``extra['cut']``).
    """
    rng = np.random.default_rng([seed, FAMILIES.index(family), len(camera), len(mode)])
    width, height, fx = CAMERAS[camera]
    for _ in range(max_tries):
        obj = make_object(family, rng)
        obj.centre = np.array([0.0, 0.0, resting_height(obj)])
        size = float(np.max(obj.extents()))
        pitch = rng.uniform(20, 55)
        # Near enough for at least ~12 px, far enough to fit in 60 % of the image.
        d_min = max(0.4, size * fx / (0.6 * height))
        d_max = min(2.5, size * fx / 12.0)
        distance = rng.uniform(d_min, max(d_min, d_max))
        yaw = rng.uniform(-25, 25)
        offset = rng.uniform(-0.25, 0.25, 2) * np.array([width, height]) / fx * distance
        r_cw, t_cw = look_down_camera(obj.centre, distance, pitch, yaw)
        r_wc = r_cw.T
        aim = obj.centre + r_wc[:, 0] * offset[0] + r_wc[:, 1] * offset[1]
        if mode == 'truncated':
            cut = rng.uniform(0.15, 0.5)
            side = rng.integers(4)
            half_w = 0.5 * width / fx * distance
            half_h = 0.5 * height / fx * distance
            span = size / 2
            shift = [half_w + span * (1 - 2 * cut), half_h + span * (1 - 2 * cut)]
            dx = (shift[0] if side == 0 else -shift[0] if side == 1 else 0.0)
            dy = (shift[1] if side == 2 else -shift[1] if side == 3 else 0.0)
            aim = obj.centre - r_wc[:, 0] * dx - r_wc[:, 1] * dy
        r_cw, t_cw = look_down_camera(aim, distance, pitch, yaw)
        if obj.kind == 'box' and not _box_two_faces(obj, r_cw, t_cw):
            continue
        cam_world = -r_cw.T @ t_cw
        away = obj.centre[:2] - cam_world[:2]
        away /= np.linalg.norm(away)
        back = size / 2 + rng.uniform(0.05, 0.6)
        wall_y = float(obj.centre[1] + back / max(0.3, abs(away[1])))
        shapes = [obj]
        if mode == 'occluded':
            shapes.append(_occluder(obj, cam_world, rng))
        scene = render(shapes, camera, r_cw, t_cw, wall_y)
        full = scene.amodal[0]
        visible = scene.masks[0]
        n_full = int(full.sum())
        if n_full < 60 or visible.sum() < 40:
            continue
        border = (full[0].any() or full[-1].any() or full[:, 0].any() or full[:, -1].any())
        if mode == 'truncated':
            # The share of the object outside the image, from a wider render.
            cut_share = _cut_share(shapes, camera, r_cw, t_cw, wall_y, n_full)
            if not (0.1 <= cut_share <= 0.6):
                continue
            scene.extra['cut'] = cut_share
            return scene
        if border:
            continue
        hidden = 1.0 - visible.sum() / n_full
        if mode == 'occluded':
            if not (0.2 <= hidden <= 0.6):
                continue
            scene.extra['hidden'] = hidden
            return scene
        if hidden > 0.0:
            continue
        return scene
    raise RuntimeError(f'no {mode} {family} scene found for seed {seed}')


def _occluder(obj: Shape, cam_world, rng) -> Shape:
    """Place a box on the table between the camera and ``obj``, shifted sideways."""
    toward = cam_world[:2] - obj.centre[:2]
    dist = np.linalg.norm(toward)
    toward /= dist
    side = np.array([-toward[1], toward[0]])
    size_obj = float(np.max(obj.extents()))
    size = np.array([rng.uniform(0.6, 1.2) * size_obj, rng.uniform(0.03, 0.1),
                     rng.uniform(0.3, 1.2) * size_obj + 0.02])
    # In front with a gap: beyond the object's bounding sphere and its own half depth.
    ahead = rng.uniform(0.03, 0.15) + np.linalg.norm(obj.extents()) / 2 + size[1] / 2
    lateral = rng.uniform(-0.7, 0.7) * size_obj
    centre = np.array([*(obj.centre[:2] + toward * ahead + side * lateral), 0.0])
    yaw = np.arctan2(side[1], side[0]) + rng.uniform(-0.3, 0.3)
    occ = Shape('box', centre, rotation(yaw, 0.0, 0.0), size)
    occ.centre[2] = resting_height(occ)
    return occ


def _cut_share(shapes, camera, r_cw, t_cw, wall_y, n_full):
    """Share of object 0's silhouette outside the image (cast over its projected box)."""
    width, height, fx = CAMERAS[camera]
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    s = shapes[0]
    corners = _corners(s) @ r_cw.T + t_cw
    if np.any(corners[:, 2] <= 1e-3):
        return 1.0
    u = corners[:, 0] / corners[:, 2] * fx + cx
    v = corners[:, 1] / corners[:, 2] * fx + cy
    uu, vv = np.meshgrid(np.arange(np.floor(u.min()), np.ceil(u.max()) + 1),
                         np.arange(np.floor(v.min()), np.ceil(v.max()) + 1))
    rays = np.stack([(uu - cx) / fx, (vv - cy) / fx, np.ones_like(uu)], -1).reshape(-1, 3)
    fn = _hit_box if s.kind == 'box' else _hit_cylinder
    total = np.isfinite(fn(rays, r_cw @ s.centre + t_cw, r_cw @ s.rotation, s.size)).sum()
    return 1.0 - n_full / max(1, total)


# ----------------------------------------------------------------------------------------
# Sensor faults

FAULTS = ('noise', 'missing', 'flying', 'dilate4', 'erode2', 'mm16')


def add_noise(depth, rng):
    """Gaussian noise of 1.5 mm * z^2 (z in metres), then 1 mm quantisation."""
    noisy = depth + rng.normal(0.0, 1.0, depth.shape) * 0.0015 * depth ** 2
    return (np.round(noisy * 1000.0) / 1000.0).astype(np.float32)


def drop_clumps(depth, rng, share=0.15):
    """Set ``share`` of the pixels to NaN in smooth clumps (a thresholded random field)."""
    h, w = depth.shape
    field = rng.normal(size=(h // 12 + 2, w // 12 + 2)).astype(np.float32)
    field = cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC)
    field += 0.5 * cv2.resize(rng.normal(size=(h // 4 + 2, w // 4 + 2)).astype(np.float32),
                              (w, h), interpolation=cv2.INTER_CUBIC)
    out = depth.copy()
    out[field > np.quantile(field, 1 - share)] = np.nan
    return out


def flying_pixels(depth, rng, jump_m=0.03, share=0.6):
    """At depth edges, replace pixels by a random mix of their and the neighbour's depth."""
    out = depth.copy()
    for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        nb = np.roll(depth, (dr, dc), axis=(0, 1))
        edge = np.abs(nb - depth) > jump_m
        edge &= np.isfinite(nb) & np.isfinite(depth)
        edge &= rng.random(depth.shape) < share / 2
        mix = rng.uniform(0.0, 1.0, depth.shape).astype(np.float32)
        out = np.where(edge, depth + mix * (nb - depth), out)
    return out.astype(np.float32)


def change_mask(mask, px):
    """Dilate (``px > 0``) or erode (``px < 0``) a mask with an elliptical kernel."""
    if px == 0:
        return mask
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(px) + 1,) * 2)
    fn = cv2.dilate if px > 0 else cv2.erode
    return fn(mask.astype(np.uint8), k).astype(bool)


def apply_faults(scene: Scene, faults, seed: int):
    """``(depth_m, mask)`` of object 0 with the named ``faults`` (see ``FAULTS``)."""
    rng = np.random.default_rng([seed, 77])
    mask = scene.masks[0]
    rows, cols = np.nonzero(np.isfinite(scene.depth_m))
    if rows.size == 0:
        return scene.depth_m.copy(), mask
    # Only the rendered window has depth: apply the faults there (the same at any size).
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    full = np.full_like(scene.depth_m, np.nan)
    depth = scene.depth_m[r0:r1, c0:c1].copy()
    if 'flying' in faults:
        depth = flying_pixels(depth, rng)
    if 'noise' in faults:
        depth = add_noise(depth, rng)
    if 'missing' in faults:
        depth = drop_clumps(depth, rng)
    if 'mm16' in faults:
        raw = np.where(np.isfinite(depth), np.round(depth * 1000.0), 0).astype(np.uint16)
        from zs_perception.geometry import depth_to_metres
        depth = depth_to_metres(raw, '16UC1')
    full[r0:r1, c0:c1] = depth
    depth = full
    if 'dilate4' in faults:
        mask = change_mask(mask, 4)
    if 'erode2' in faults:
        mask = change_mask(mask, -2)
    return depth, mask
