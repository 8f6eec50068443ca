"""Automatic annotation: recordings and image folders -> COCO / YOLO datasets with review pages.

ROS-free. The command is :mod:`zs_perception.annotation.run` (``zs_perception_annotate`` or
``python -m zs_perception.annotation``); see ``docs/annotation.md``.
"""
