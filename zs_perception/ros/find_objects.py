"""The FindObjects action server of the perception node: a thin shell around FindQuery.

The logic (agreement over frames, scores, poses, timeout, status and reason) is
:class:`zs_perception.pipeline.find_objects.FindQuery`; this module converts goals and
results and runs the action server. The server lives on a small helper node spun by its
own two-thread executor, so that a goal that waits for frames never blocks the perception
node's executor (rclpy's async callbacks in Jazzy busy-loop their executor while they wait)
and the action works in any executor the node is added to.

One goal at a time: a goal that arrives while another runs is rejected. While a goal runs
its prompts are looked for together with the streaming goal, and frames are processed
even when the ``stream`` parameter is false. Cancelling ends the goal at once (the
objects confirmed so far come back).
"""

import threading
import time
from typing import Callable, List, Optional, Sequence

import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor

from zs_perception.action import FindObjects
from zs_perception.msg import SegmentedObjectArray
from zs_perception.pipeline import find_objects as fo
from zs_perception.pipeline.find_objects import Candidate, FindQuery, Verdict
from zs_perception.ros import conversions
from zs_perception.segmentation.base import Prompt, PromptLike
from zs_perception.segmentation.prompting import parse_goal, text_key

# How often a running goal checks its timeout and cancel requests (s).
_CHECK_PERIOD_S = 0.02
_STATUS_CODES = {
    fo.FOUND: FindObjects.Result.STATUS_FOUND, fo.PARTIAL: FindObjects.Result.STATUS_PARTIAL,
    fo.NOT_FOUND: FindObjects.Result.STATUS_NOT_FOUND,
    fo.NO_CAMERA: FindObjects.Result.STATUS_NO_CAMERA,
    fo.NO_DEPTH: FindObjects.Result.STATUS_NO_DEPTH,
    fo.CANCELLED: FindObjects.Result.STATUS_CANCELLED,
    fo.INVALID: FindObjects.Result.STATUS_INVALID, fo.ABORTED: FindObjects.Result.STATUS_ABORTED,
}


def goal_prompts(goal, max_prompts: int, max_chars: int) -> List[PromptLike]:
    """Return a goal's prompts: its phrases (goal-topic syntax) then its ``Prompt`` messages.

    Raises:
        ValueError: a bad prompt message (see :func:`conversions.prompts_from_msgs`), or
            more than ``max_prompts`` prompts.

    """
    phrases = parse_goal(goal.phrases, max_prompts, max_chars).phrases
    prompts: List[PromptLike] = list(phrases) + list(conversions.prompts_from_msgs(goal.prompts))
    if len(prompts) > max_prompts:
        raise ValueError(f'the goal has {len(prompts)} prompts; at most max_prompts = '
                         f'{max_prompts} are allowed')
    return prompts


def prompt_label(prompt: PromptLike) -> str:
    """Return the label objects found by ``prompt`` are reported with."""
    return prompt.label if isinstance(prompt, Prompt) else str(prompt)


class FindObjectsServer:
    """The ``~/find_objects`` action of a perception node.

    Args:
        node: the perception node (its name, namespace, context and logger are used).
        settings: returns the node's settings in force (``find_timeout_s``,
            ``max_prompts``, ``max_prompt_chars``).
        set_query_prompts: called with the prompts of a starting goal and with ``[]`` when
            it ends; the node applies them with the streaming goal before its next frame.

    """

    def __init__(self, node, settings: Callable[[], dict],
                 set_query_prompts: Callable[[Sequence[PromptLike]], None]):
        self._settings = settings
        self._set_query_prompts = set_query_prompts
        self._log = node.get_logger()
        self._cond = threading.Condition()
        self._query: Optional[FindQuery] = None
        # The running goal's prompts reached the segmenter: frames count from then on.
        self._applied = False
        self._busy = False
        self._closed = False
        self._helper = rclpy.create_node(
            f'{node.get_name()}_find_objects', namespace=node.get_namespace(),
            context=node.context, start_parameter_services=False)
        name = f'{node.get_fully_qualified_name()}/find_objects'
        self._server = ActionServer(
            self._helper, FindObjects, name, execute_callback=self._execute,
            goal_callback=self._on_goal, cancel_callback=self._on_cancel,
            callback_group=ReentrantCallbackGroup())
        self.action_name = name
        self._executor = MultiThreadedExecutor(num_threads=2, context=node.context)
        self._executor.add_node(self._helper)
        self._thread = threading.Thread(target=self._spin, name='zs_perception_find_objects',
                                        daemon=True)
        self._thread.start()

    @property
    def active(self) -> bool:
        """Return True while a goal runs (frames must then be processed)."""
        return self._query is not None

    # ------------------------------------------------------------------ worker side
    def on_frame(self, objects: SegmentedObjectArray, has_depth: bool) -> None:
        """Give the running goal one processed frame's objects (from the node's worker)."""
        with self._cond:
            query = self._query
            if query is None or not self._applied:
                return
            keys = {text_key(label): label for label in query.labels}
            candidates = [Candidate(keys[text_key(o.label)], float(o.score), bool(o.has_pose),
                                    (o, objects.header))
                          for o in objects.objects if text_key(o.label) in keys]
            stamp = objects.header.stamp.sec + objects.header.stamp.nanosec * 1e-9
            query.frame(candidates, stamp, has_depth, time.monotonic())
            self._cond.notify_all()

    def on_prompts_applied(self, active: Sequence[str]) -> None:
        """End the running goal as invalid if the segmenter did not take its prompts."""
        with self._cond:
            query = self._query
            if query is None:
                return
            self._applied = True
            taken = {text_key(label) for label in active}
            refused = [label for label in query.labels if text_key(label) not in taken]
            if refused:
                query.end(fo.INVALID, f'the segmenter did not take the prompts '
                          f'{", ".join(map(repr, refused))} (an image prompt on a backend '
                          "without image prompts, say: see the node's warnings)")
                self._cond.notify_all()

    # ------------------------------------------------------------------ action callbacks
    def _on_goal(self, goal) -> GoalResponse:
        with self._cond:
            if self._busy or self._closed:
                self._log.warning('FindObjects: rejected a goal: '
                                  + ('the node is stopping.' if self._closed else
                                     'another goal is running (one at a time; cancel it '
                                     'or wait for its result).'))
                return GoalResponse.REJECT
            self._busy = True
        return GoalResponse.ACCEPT

    def _on_cancel(self, _goal_handle) -> CancelResponse:
        with self._cond:
            self._cond.notify_all()
        return CancelResponse.ACCEPT

    def _execute(self, goal_handle) -> FindObjects.Result:
        try:
            return self._run(goal_handle)
        finally:
            with self._cond:
                self._busy = False

    def _run(self, goal_handle) -> FindObjects.Result:
        goal = goal_handle.request
        settings = self._settings()
        timeout_s = float(goal.timeout_s) or settings['find_timeout_s']
        try:
            prompts = goal_prompts(goal, settings['max_prompts'], settings['max_prompt_chars'])
            query = FindQuery([prompt_label(p) for p in prompts], time.monotonic(), timeout_s,
                              float(goal.min_score), bool(goal.pose_required),
                              max(1, int(goal.consecutive_frames)))
        except ValueError as err:
            reason = str(err).rstrip('.')
            verdict = Verdict(fo.INVALID, reason[0].upper() + reason[1:] + '.')
            self._log.warning(f'FindObjects: invalid goal: {verdict.reason}')
            goal_handle.abort()
            return self._result(verdict)
        self._log.info(f'FindObjects: looking for {query.labels} (timeout {timeout_s:g} s, '
                       f'min_score {query.min_score:g}, pose required {query.pose_required}, '
                       f'{query.consecutive_frames} consecutive frames).')
        with self._cond:
            if self._closed:
                query.abort('the node is stopping')
            else:
                self._query = query
                self._applied = False
        self._set_query_prompts(prompts)
        frames_sent = 0
        try:
            with self._cond:
                while query.verdict is None:
                    if goal_handle.is_cancel_requested:
                        query.cancel()
                        break
                    if query.check(time.monotonic()) is not None:
                        break
                    if query.frames != frames_sent:
                        frames_sent = query.frames
                        goal_handle.publish_feedback(self._feedback(query))
                    self._cond.wait(timeout=_CHECK_PERIOD_S)
                self._query = None
        finally:
            self._set_query_prompts([])
        verdict = query.verdict
        self._log.info(f'FindObjects: {verdict.status}: {verdict.reason}')
        if verdict.status == fo.CANCELLED and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif verdict.status in (fo.INVALID, fo.ABORTED, fo.CANCELLED):
            goal_handle.abort()
        else:
            goal_handle.succeed()
        return self._result(verdict)

    # ------------------------------------------------------------------ conversions
    @staticmethod
    def _array(candidates: Sequence[Candidate], labels: Sequence[str]) -> SegmentedObjectArray:
        out = SegmentedObjectArray(prompts=list(labels))
        newest = None
        for candidate in candidates:
            obj, header = candidate.payload
            out.objects.append(obj)
            stamp = (header.stamp.sec, header.stamp.nanosec)
            if newest is None or stamp > (newest.stamp.sec, newest.stamp.nanosec):
                newest = header
        if newest is not None:
            out.header = newest
        return out

    def _feedback(self, query: FindQuery) -> FindObjects.Feedback:
        best = [query.best[label] for label in query.labels if label in query.best]
        return FindObjects.Feedback(frames_looked_at=query.frames,
                                    best_candidates=self._array(best, query.labels))

    def _result(self, verdict: Verdict) -> FindObjects.Result:
        labels = [c.label for c in verdict.confirmed]
        return FindObjects.Result(status=_STATUS_CODES[verdict.status], reason=verdict.reason,
                                  objects=self._array(verdict.confirmed, labels))

    # ------------------------------------------------------------------ lifetime
    def _spin(self) -> None:
        try:
            self._executor.spin()
        except Exception:  # noqa: B902 (the context shut down under the executor: stopping)
            pass

    def close(self) -> None:
        """End a running goal as aborted, stop the helper executor, destroy its node."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            if self._query is not None:
                self._query.abort('the node is stopping processing (shut down or deactivated)')
            self._cond.notify_all()
        deadline = time.monotonic() + 2.0
        while self._busy and time.monotonic() < deadline:
            time.sleep(0.01)
        self._executor.shutdown(timeout_sec=1.0)
        self._thread.join(timeout=2.0)
        self._server.destroy()
        self._helper.destroy_node()
