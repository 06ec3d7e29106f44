"""Scripted faults: per action and instance (or image) id, the outcomes of the next calls.

A script is a list of outcomes, one used up by each call that names the id (or by every call of
the action, for the id ``*``)::

    {"StartInstances": {"i-3": ["fail", "fail", "ok"]}, "StopInstances": {"i-4": ["lost"]}}

The older form, an id mapped straight to a list (``{"i-1": ["lost", "ok"]}``), scripts
CreateImage. Outcomes of the whole call: ``ok``; ``lost`` (done, then the connection is closed
without an answer); ``drop`` (closed before anything is done); ``500``, ``503`` (nothing done)
and ``504`` (done, then a time-out error); ``garbage`` (done, then an HTML 502); ``busy`` (400
OPERATION_DENIED_INSTANCE_IN_OPERATION); ``429``. Outcomes of one id: ``fail`` (StartInstances,
StopInstances, DeleteImages: listed as failed, left as it is) and ``hang`` (StopInstances: a
graceful stop stays STOPPING until a forced stop arrives). When a call names several scripted
ids, each uses up one outcome, and the first whole-call outcome other than ``ok`` (the ``*``
script's first) is the call's.

This module imports nothing heavy: ``imagebatch`` builds the ``--script`` flag from it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ACTIONS",
    "ANY_ID",
    "CALL_OUTCOMES",
    "ITEM_OUTCOMES",
    "NO_FAULT",
    "ScriptBook",
    "ScriptError",
    "Taken",
    "check_outcome",
    "normalise",
    "parse_script_flag",
]

#: The actions the fake serves, and the parameter naming the ids a script keys on.
ACTIONS: Mapping[str, str] = {
    "CreateImage": "instanceId",
    "DeleteImages": "imageIds",
    "DescribeCustomImages": "imageIds",
    "DescribeInstances": "instanceIds",
    "DescribeInstancesStatus": "instanceIds",
    "StartInstances": "instanceIds",
    "StopInstances": "instanceIds",
}
#: The script id that matches every call of its action.
ANY_ID = "*"
CALL_OUTCOMES = frozenset({"ok", "lost", "drop", "500", "503", "504", "garbage", "busy", "429"})
#: Outcomes for one id, and the actions that take them.
ITEM_OUTCOMES: Mapping[str, frozenset[str]] = {
    "fail": frozenset({"StartInstances", "StopInstances", "DeleteImages"}),
    "hang": frozenset({"StopInstances"}),
}


class ScriptError(ValueError):
    """A script the fake cannot follow; the message names the action, id and outcome."""


@dataclass(frozen=True, slots=True)
class Taken:
    """What the scripts say about one call.

    Args:
        call: the whole call's outcome (``ok`` when none is scripted).
        failing: ids to list as failed.
        hanging: ids whose graceful stop hangs.

    ``failing`` and ``hanging`` hold ``*`` when a ``*`` script put them there: then they apply
    to every id of the call (see :meth:`failing_of`).
    """

    call: str = "ok"
    failing: frozenset[str] = frozenset()
    hanging: frozenset[str] = frozenset()

    def failing_of(self, ids: Sequence[str]) -> frozenset[str]:
        """The ids of ``ids`` to list as failed.

        Args:
            ids: the call's ids.
        """
        return frozenset(ids) if ANY_ID in self.failing else self.failing

    def hanging_of(self, ids: Sequence[str]) -> frozenset[str]:
        """The ids of ``ids`` whose graceful stop hangs.

        Args:
            ids: the call's ids.
        """
        return frozenset(ids) if ANY_ID in self.hanging else self.hanging


NO_FAULT = Taken()


def check_outcome(action: str, ident: str, outcome: str) -> None:
    """Raise :class:`ScriptError` unless ``action`` can follow ``outcome`` for ``ident``.

    Args:
        action: the scripted action.
        ident: the id (for the message).
        outcome: one outcome.
    """
    if action not in ACTIONS:
        msg = f"script for {action!r}: not an action of the fake; known: {', '.join(sorted(ACTIONS))}"
        raise ScriptError(msg)
    if outcome in CALL_OUTCOMES:
        return
    takers = ITEM_OUTCOMES.get(outcome)
    if takers is None:
        known = ", ".join(sorted(CALL_OUTCOMES | set(ITEM_OUTCOMES)))
        msg = f"script for {action} {ident}: unknown outcome {outcome!r}; known: {known}"
        raise ScriptError(msg)
    if action not in takers:
        msg = f"script for {action} {ident}: outcome {outcome!r} is only for {', '.join(sorted(takers))}"
        raise ScriptError(msg)


def parse_script_flag(text: str) -> tuple[str, str, list[str]]:
    """``ACTION:ID:OUTCOME,OUTCOME,...`` as ``(action, id, outcomes)``.

    Args:
        text: the ``--script`` value; the id may hold ``:`` (the action is before the first,
            the outcomes after the last).

    Raises:
        ScriptError: the value is not in that form, or names an unknown action or outcome.
    """
    action, _, rest = text.partition(":")
    ident, _, outcomes = rest.rpartition(":")
    if not action or not ident or not outcomes:
        msg = f"{text!r} is not ACTION:ID:OUTCOME[,OUTCOME...] (e.g. StopInstances:i-4:hang)"
        raise ScriptError(msg)
    steps = [o.strip() for o in outcomes.split(",")]
    for step in steps:
        check_outcome(action, ident, step)
    return action, ident, steps


def normalise(scripts: Mapping[str, Any]) -> dict[tuple[str, str], list[str]]:
    """Scripts in either form as ``{(action, id): outcomes}``.

    Args:
        scripts: ``{action: {id: [outcome, ...]}}``, or the older ``{instance id: [outcome, ...]}``
            of CreateImage (both may be mixed).

    Raises:
        ScriptError: an unknown action or outcome, an outcome the action cannot take, or a
            value of the wrong shape.
    """
    flat: dict[tuple[str, str], list[str]] = {}
    for key, value in scripts.items():
        per_id = value if isinstance(value, Mapping) else {key: value}
        action = key if isinstance(value, Mapping) else "CreateImage"
        for ident, outcomes in per_id.items():
            if isinstance(outcomes, str) or not isinstance(outcomes, Sequence):
                msg = f"script for {action} {ident}: must be a list of outcomes, not {type(outcomes).__name__}"
                raise ScriptError(msg)
            for outcome in outcomes:
                check_outcome(action, str(ident), str(outcome))
            flat.setdefault((action, str(ident)), []).extend(str(o) for o in outcomes)
    return flat


class ScriptBook:
    """The scripts of one fake, used up call by call.

    Args:
        scripts: either form (see :func:`normalise`).

    Raises:
        ScriptError: see :func:`normalise`.
    """

    def __init__(self, scripts: Mapping[str, Any]) -> None:
        self._queues: dict[str, dict[str, deque[str]]] = {}
        for (action, ident), outcomes in normalise(scripts).items():
            self._queues.setdefault(action, {})[ident] = deque(outcomes)

    def take(self, action: str, params: Mapping[str, Any]) -> Taken:
        """Use up the outcomes this call meets: the ``*`` script's, then each named id's once.

        Args:
            action: the call's action.
            params: its parameters (ids of the wrong type are ignored here).
        """
        queues = self._queues.get(action)
        if not queues:  # the common case: nothing scripted for this action
            return NO_FAULT
        call, failing, hanging = "ok", set(), set()
        named = [i for i in dict.fromkeys(_ids(params.get(ACTIONS[action]))) if i != ANY_ID]
        for ident in [ANY_ID, *named]:
            queue = queues.get(ident)
            if not queue:
                continue
            outcome = queue.popleft()
            if outcome == "fail":
                failing.add(ident)
            elif outcome == "hang":
                hanging.add(ident)
            elif call == "ok":
                call = outcome
        return Taken(call, frozenset(failing), frozenset(hanging))


def _ids(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []
