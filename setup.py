"""Pip install of the ROS-free core of zs_perception (segmentation engine, geometry, tools).

ROS users build the whole package with colcon (CMakeLists.txt); this file is for using the
engine and geometry outside ROS: ``pip install .``. The ROS shell (zs_perception.ros) and
the generated messages are not part of this distribution.
"""

from setuptools import find_packages, setup

setup(
    name='zs_perception',
    version='0.1.0',
    description='Open-vocabulary segmentation and 3D object poses from RGB-D (ROS-free core)',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['zs_perception', 'zs_perception.*'],
                           exclude=['zs_perception.ros', 'zs_perception.ros.*']),
    install_requires=[
        'numpy',
        'numba',
        'opencv-python-headless',
        'torch',
        'torchvision',
        'transformers>=5.0,<6',
        'segment-anything',
        'pycocotools',
        'pyyaml',
    ],
    # zs_perception.bags (rosbag2 in and out) imports rosbags only when used.
    extras_require={'bags': ['rosbags']},
    entry_points={
        'console_scripts': [
            'zs-make-random-models = zs_perception.testing.random_models:main',
            'zs_perception_annotate = zs_perception.annotation.run:main',
        ],
    },
)
