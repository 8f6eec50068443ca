"""The managed (lifecycle) variant of the perception node, for lifecycle managers (Nav2...).

The same node as :class:`zs_perception.ros.node.PerceptionNode`, its start-up split over
the lifecycle transitions (docs/interfaces.md):

- construction (unconfigured): the parameters are declared and checked, nothing loaded;
- configure: the model is loaded (a load error fails the transition with one ERROR line
  and the node stays unconfigured);
- activate: subscriptions, publishers, timers, the worker and the FindObjects action;
- deactivate: all of those are stopped and destroyed (a running goal ends as aborted);
  the model stays loaded, so activate is fast;
- cleanup: the model is dropped and its memory released (CUDA: the caching allocator's
  blocks are returned with ``torch.cuda.empty_cache``);
- shutdown, from any state: as deactivate then cleanup.
"""

import gc
import sys
from typing import Callable, List, Optional

from rclpy.lifecycle import LifecycleNodeMixin, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node

from zs_perception.ros.node import PerceptionNode
from zs_perception.ros.process import run_node
from zs_perception.segmentation.base import SegmentationError, Segmenter


def release_torch_memory() -> Optional[int]:
    """Collect garbage and return CUDA's cached blocks; return the bytes still allocated.

    Returns ``None`` when torch is not imported or CUDA is not available (on CPU, memory
    goes back when the last reference to the model goes: ``gc.collect`` here).
    """
    gc.collect()
    torch = sys.modules.get('torch')
    if torch is None or not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    return int(torch.cuda.memory_allocated())


class LifecyclePerceptionNode(LifecycleNodeMixin, PerceptionNode):
    """The perception node as a managed node (``lifecycle_msgs`` services and states).

    Args:
        segmenter_factory: builds the segmenter at configure; ``None``: from the parameters
            (``create_segmenter``). Tests pass a factory of a double.
        node_name: ROS node name.
        **kwargs: passed to :class:`rclpy.node.Node`.

    Raises:
        ValueError: an invalid or unknown parameter (as :class:`PerceptionNode`).

    """

    def __init__(self, *, segmenter_factory: Optional[Callable[[], Segmenter]] = None,
                 node_name: str = 'zs_perception', **kwargs):
        Node.__init__(self, node_name, **kwargs)
        LifecycleNodeMixin.__init__(self, enable_communication_interface=True)
        self._segmenter_factory = segmenter_factory
        self._init_parameters()
        self._active = False
        self.get_logger().info(
            f'zs_perception (lifecycle) unconfigured: backend {self._settings["backend"]}; '
            f'configure loads the model, activate starts processing '
            f'(ros2 lifecycle set {self.get_fully_qualified_name()} configure).')

    # ---------------------------------------------------------------- transitions
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model."""
        try:
            segmenter = (self._segmenter_factory() if self._segmenter_factory is not None
                         else None)
            self._init_pipeline(segmenter)
        except (ValueError, SegmentationError) as err:
            self.get_logger().error(f'configure failed, staying unconfigured: '
                                    f'{" ".join(str(err).split())}')
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info('configured: the model is loaded; activate starts processing.')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe, advertise and start the worker and the FindObjects action."""
        self._init_streams()
        self._active = True
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop processing; destroy the subscriptions, publishers and timers."""
        self._stop_streams()
        self.get_logger().info('deactivated: not processing; the model stays loaded.')
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Drop the model and release its memory."""
        self._release_pipeline()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop everything, from any state."""
        self._stop_streams()
        self._release_pipeline()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Recover to unconfigured: stop and release everything."""
        self._stop_streams()
        self._release_pipeline()
        return TransitionCallbackReturn.SUCCESS

    # ---------------------------------------------------------------- helpers
    def _stop_streams(self) -> None:
        if not self._active:
            return
        self.stop()
        self._worker = None
        self._find = None
        subscriptions: List = [self._image_sub, self._depth_sub, self._info_sub,
                               self._goal_sub, self._goal_prompts_sub, self._latched_goal_sub]
        for sub in subscriptions:
            if sub is not None:
                self.destroy_subscription(sub)
        self._latched_goal_sub = None
        for pub in (self._objects_pub, self._masks_pub, self._poses_pub, self._markers_pub,
                    self._points_pub, self._debug_pub, self._diagnostics_pub):
            self.destroy_publisher(pub)
        for timer in self._timers_made:
            self.destroy_timer(timer)
        self.destroy_guard_condition(self._prompts_guard)
        self._active = False

    def _release_pipeline(self) -> None:
        if self._pipeline is None:
            return
        self._pipeline = None  # the only reference to the segmenter and its model
        allocated = release_torch_memory()
        self.get_logger().info('cleaned up: the model is released' + (
            '' if allocated is None else
            f' (CUDA memory still allocated: {allocated / 2**20:.0f} MiB)') + '.')

    def destroy_node(self) -> None:
        """Stop processing and release the model, then destroy the node."""
        self._stop_streams()
        self._release_pipeline()
        super().destroy_node()


def main(args: Optional[List[str]] = None) -> int:
    """Run the lifecycle node until SIGINT or SIGTERM; return the process exit status."""
    return run_node(LifecyclePerceptionNode, 'zs_perception',
                    fatal=(ValueError, SegmentationError), args=args)
