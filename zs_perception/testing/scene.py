"""A procedural RGB-D test scene: a red box and a blue cylinder on a wooden table.

Rendered by ray casting against analytic shapes, so colour, depth, masks and object poses
are exactly consistent: every pixel's depth is the distance (along the optical axis) to
the first surface its ray hits. Used by the demo and by the tests as a scene with known
answers. Pure numpy; deterministic for a given ``(width, height, seed)``.

Frames: the camera optical frame (REP-103: x right, y down, z forward), metres. The world
frame used to place things has z up and the table top at z = 0.
"""

from typing import Dict

import numpy as np

from zs_perception.geometry.camera import CameraIntrinsics

BOX_SIZE = np.array([0.24, 0.10, 0.08])  # along the box's own x, y, z (length, width, height)
CYLINDER_RADIUS = 0.045
CYLINDER_HEIGHT = 0.20  # along the cylinder's own z (its axis)
TABLE_HALF_SIZE = (0.60, 0.40)  # table top, world x and y half sizes
FLOOR_Z = -0.75  # the floor under the table, far background

_BOX_COLOR = np.array([200, 40, 35], dtype=np.float64)
_CYLINDER_COLOR = np.array([40, 70, 210], dtype=np.float64)
_FLOOR_COLOR = np.array([110, 110, 115], dtype=np.float64)
_LIGHT = np.array([0.3, -0.4, 1.0]) / np.linalg.norm([0.3, -0.4, 1.0])  # world frame


def _rot_z(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _look_at(eye, target):
    """Camera-to-world rotation of an optical frame at ``eye`` looking at ``target``."""
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])  # right: horizontal
    x /= np.linalg.norm(x)
    y = np.cross(z, x)  # down
    return np.stack([x, y, z], axis=1)


def _hit_box(origin, dirs, centre, rot, size):
    """Ray parameter of the first hit with an oriented box, inf where missed; normals (world)."""
    o = (origin - centre) @ rot  # box frame
    d = dirs @ rot
    half = size / 2.0
    with np.errstate(divide='ignore', invalid='ignore'):
        t1 = (-half - o) / d
        t2 = (half - o) / d
    t_near = np.minimum(t1, t2)
    t_far = np.maximum(t1, t2)
    t_enter = np.nanmax(t_near, axis=1)
    t_exit = np.nanmin(t_far, axis=1)
    hit = (t_enter <= t_exit) & (t_enter > 0)
    t = np.where(hit, t_enter, np.inf)
    axis = np.argmax(t_near, axis=1)
    normal_local = np.zeros_like(d)
    normal_local[np.arange(len(d)), axis] = -np.sign(d[np.arange(len(d)), axis])
    return t, normal_local @ rot.T


def _hit_cylinder(origin, dirs, base_centre, rot, radius, height):
    """Ray parameter of the first hit with a capped vertical cylinder; normals (world)."""
    o = (origin - base_centre) @ rot
    d = dirs @ rot
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2.0 * (o[0] * d[:, 0] + o[1] * d[:, 1])
    c = o[0] ** 2 + o[1] ** 2 - radius ** 2
    disc = b * b - 4.0 * a * c
    with np.errstate(invalid='ignore', divide='ignore'):
        t_side = (-b - np.sqrt(disc)) / (2.0 * a)
        z_side = o[2] + t_side * d[:, 2]
        side_ok = (disc >= 0) & (t_side > 0) & (z_side >= 0) & (z_side <= height)
        t_side = np.where(side_ok, t_side, np.inf)
        t_cap = (height - o[2]) / d[:, 2]
        p_cap = o[None, :2] + t_cap[:, None] * d[:, :2]
        cap_ok = (t_cap > 0) & (np.sum(p_cap ** 2, axis=1) <= radius ** 2)
        t_cap = np.where(cap_ok, t_cap, np.inf)
    t = np.minimum(t_side, t_cap)
    p = o[None, :] + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    normal_local = np.where((t_cap <= t_side)[:, None], [0.0, 0.0, 1.0],
                            np.stack([p[:, 0], p[:, 1], np.zeros(len(p))], axis=1) / radius)
    return t, normal_local @ rot.T


def _hit_plane_z(origin, dirs, z):
    with np.errstate(divide='ignore', invalid='ignore'):
        t = (z - origin[2]) / dirs[:, 2]
    return np.where(t > 0, t, np.inf)


def render_scene(width: int = 640, height: int = 480, seed: int = 0) -> Dict[str, object]:
    """Render the scene: colour, depth, intrinsics, per-object masks, poses and sizes.

    ``seed`` varies the camera viewpoint, the objects' placement and yaw and the table
    texture within ranges that keep both objects fully in view and all three of each
    object's extents visible (top and two sides of the box, top and front of the cylinder).

    Returns:
        dict with
        ``rgb``: ``(height, width, 3)`` ``uint8``;
        ``depth_m``: ``(height, width)`` ``float32`` metres along the optical axis (every
        pixel hits the table or the floor, so none is missing);
        ``intrinsics``: :class:`CameraIntrinsics` of both images;
        ``masks``: ``{'box', 'cylinder'}`` -> ``(height, width)`` ``bool`` visible pixels;
        ``poses``: name -> ``(position (3,) float64, rotation (3, 3) float64)``, the object
        centre and axes (columns) in the camera optical frame;
        ``extents``: name -> ``(3,)`` ``float64`` metres along the object's own x, y, z
        (the cylinder's z is its axis);
        ``camera_to_world``: ``(4, 4)`` ``float64`` pose of the camera in the world frame.

    """
    rng = np.random.default_rng(seed)
    f = 0.9 * width
    intr = CameraIntrinsics(fx=f, fy=f, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0,
                            width=width, height=height)
    azimuth = np.deg2rad(-90.0 + rng.uniform(-20.0, 20.0))
    elevation = np.deg2rad(rng.uniform(38.0, 50.0))
    distance = rng.uniform(0.70, 0.80)
    target = np.array([0.0, 0.0, 0.06])
    eye = target + distance * np.array([np.cos(elevation) * np.cos(azimuth),
                                        np.cos(elevation) * np.sin(azimuth),
                                        np.sin(elevation)])
    cam_rot = _look_at(eye, target)  # camera-to-world

    box_rot = _rot_z(np.deg2rad(rng.uniform(20.0, 40.0)))
    box_centre = np.array([-0.10 + rng.uniform(-0.02, 0.02), 0.03 + rng.uniform(-0.02, 0.02),
                           BOX_SIZE[2] / 2.0])
    cyl_rot = _rot_z(np.deg2rad(rng.uniform(0.0, 360.0)))
    cyl_base = np.array([0.14 + rng.uniform(-0.02, 0.02), -0.02 + rng.uniform(-0.02, 0.02),
                         0.0])

    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    rays_cam = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy,
                         np.ones_like(u)], axis=-1).reshape(-1, 3)
    dirs = rays_cam @ cam_rot.T  # world frame; the ray parameter t is the optical depth

    t_box, n_box = _hit_box(eye, dirs, box_centre, box_rot, BOX_SIZE)
    t_cyl, n_cyl = _hit_cylinder(eye, dirs, cyl_base, cyl_rot, CYLINDER_RADIUS,
                                 CYLINDER_HEIGHT)
    t_table = _hit_plane_z(eye, dirs, 0.0)
    p_table = eye + np.where(np.isfinite(t_table), t_table, 0.0)[:, None] * dirs
    on_table = (np.abs(p_table[:, 0]) <= TABLE_HALF_SIZE[0]) & \
        (np.abs(p_table[:, 1]) <= TABLE_HALF_SIZE[1])
    t_table = np.where(on_table, t_table, np.inf)
    t_floor = _hit_plane_z(eye, dirs, FLOOR_Z)

    t_all = np.stack([t_box, t_cyl, t_table, t_floor], axis=1)
    first = np.argmin(t_all, axis=1)
    depth = t_all[np.arange(len(first)), first]

    # Colour: albedo times Lambert shading plus ambient light.
    normals = np.zeros_like(dirs)
    normals[:, 2] = 1.0  # table and floor
    normals[first == 0] = n_box[first == 0]
    normals[first == 1] = n_cyl[first == 1]
    shade = 0.35 + 0.65 * np.clip(normals @ _LIGHT, 0.0, 1.0)
    p = eye + depth[:, None] * dirs
    grain = 0.5 + 0.5 * np.sin(p[:, 0] * 90.0 + 4.0 * np.sin(p[:, 1] * 13.0 + rng.uniform(0, 6)))
    tiles = ((np.floor(p[:, 0] / 0.1) + np.floor(p[:, 1] / 0.1)) % 2) * 0.08
    wood = np.array([150.0, 105.0, 60.0])[None, :] * (0.8 + 0.2 * grain + tiles)[:, None]
    albedo = np.select([first[:, None] == 0, first[:, None] == 1, first[:, None] == 2],
                       [_BOX_COLOR[None, :], _CYLINDER_COLOR[None, :], wood],
                       _FLOOR_COLOR[None, :])
    noise = rng.normal(0.0, 3.0, size=albedo.shape)
    rgb = np.clip(albedo * shade[:, None] + noise, 0, 255).astype(np.uint8)

    world_to_cam = cam_rot.T
    cyl_centre = cyl_base + cyl_rot[:, 2] * CYLINDER_HEIGHT / 2.0
    camera_to_world = np.eye(4)
    camera_to_world[:3, :3] = cam_rot
    camera_to_world[:3, 3] = eye
    return {
        'rgb': rgb.reshape(height, width, 3),
        'depth_m': depth.reshape(height, width).astype(np.float32),
        'intrinsics': intr,
        'masks': {'box': (first == 0).reshape(height, width),
                  'cylinder': (first == 1).reshape(height, width)},
        'poses': {'box': (world_to_cam @ (box_centre - eye), world_to_cam @ box_rot),
                  'cylinder': (world_to_cam @ (cyl_centre - eye), world_to_cam @ cyl_rot)},
        'extents': {'box': BOX_SIZE.copy(),
                    'cylinder': np.array([2 * CYLINDER_RADIUS, 2 * CYLINDER_RADIUS,
                                          CYLINDER_HEIGHT])},
        'camera_to_world': camera_to_world,
    }
