"""Checking one row of a job list: a :class:`~batch.models.Job`, or problems naming file, line
and field; and the 8-byte hashes that find duplicate ids and names without holding the list.
"""

from __future__ import annotations

import bisect
import itertools
from array import array
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..models import Job
from ..naming import NameTemplate, image_name_problem
from ..ownership import INSTANCE_KEY, TAG_MAX, reserved_tag_problem
from ..text import clip
from .common import ALL_COLUMNS, FAKE_COLUMNS, INSTANCE_ID_RE, NOT_OBJECT, Located, Row, did_you_mean

__all__ = ["HashSet", "RowChecker", "string_hash"]

_MASK = (1 << 64) - 1


class RowChecker(Located):
    """The checking half of :class:`~batch.sources.JobList`: row -> job or problems."""

    fmt: str
    template: NameTemplate
    date: datetime
    run_id: str
    _defaults: dict[str, Any]

    def _job(self, row: Row, problems: list[str]) -> Job | None:
        return self._check_row(row, problems)[0]

    def _check_row(self, row: Row, problems: list[str]) -> tuple[Job | None, str, str]:
        """The row's job (``None`` when it has a problem), and its instance id and image name so
        far as they could be read (duplicates are found even on rows with other problems)."""
        fields = row.fields
        line = row.line
        if NOT_OBJECT in fields:
            kind = type(fields[NOT_OBJECT]).__name__
            problems.append(f"{self._where(line)}: a job must be an object, not {kind}")
            return None, "", ""
        before = len(problems)
        if self.fmt != "csv":
            for key in fields:
                if key not in ALL_COLUMNS:
                    problems.append(f"{self._where(line, key)}: unknown field{did_you_mean(key)}")
            fields = {**self._defaults, **fields} if self._defaults else fields
        instance_id = self._string(fields, "instanceId", line, problems, required=True)
        if instance_id and not INSTANCE_ID_RE.fullmatch(instance_id):
            problems.append(f"{self._where(line, 'instanceId')}: {clip(instance_id)} is not an instance id")
            instance_id = ""
        elif instance_id and len(instance_id) > TAG_MAX:
            # Every image the run makes carries the instance id as its imagebatch-instance tag.
            problems.append(
                f"{self._where(line, 'instanceId')}: {clip(instance_id)} is {len(instance_id)} characters; "
                f"the image's {INSTANCE_KEY} tag takes 1-{TAG_MAX}"
            )
        group = self._string(fields, "resourceGroupId", line, problems) or None
        tags = self._tags(fields, line, problems)
        name = self._string(fields, "imageName", line, problems)
        from_template = not name
        values = {"instanceId": instance_id, "resourceGroupId": group or ""}
        if not name and instance_id:
            name = self.template.render(values, date=self.date, run_id=self.run_id)
            if not name:
                # An empty name is a problem like any bad name: the row must not vanish.
                problems.append(
                    f"{self._where(line, 'imageName')}: the name made by {self._template_origin(values)} is empty; "
                    "set imageName on this row or use {instanceId} in the template"
                )
        if name:
            problem = image_name_problem(name)
            if problem:
                origin = f" (made by {self._template_origin(values)})" if from_template else ""
                problems.append(f"{self._where(line, 'imageName')}: {problem}{origin}")
        fake = {k: str(fields[k]) for k in FAKE_COLUMNS if fields.get(k) not in (None, "")}
        power_group = self._string(fields, "group", line, problems) or None
        if power_group is not None and len(power_group) > 128:
            problems.append(f"{self._where(line, 'group')}: {clip(power_group)} is longer than 128 characters")
        if len(problems) > before or not instance_id or not name:
            return None, instance_id, name
        job = Job(
            line=line,
            instance_id=instance_id,
            image_name=name,
            resource_group_id=group,
            tags=tags,
            fake=fake,
            group=power_group,
        )
        return job, instance_id, name

    def _template_origin(self, values: Mapping[str, str]) -> str:
        """``--name-template '...' from resourceGroupId 'rg1', date``: the template and what it read."""
        used = [f"{f} {clip(values[f], 40)}" if f in values else f for f in self.template.fields]
        return f"--name-template {clip(self.template.template)}" + (f" from {', '.join(used)}" if used else "")

    def _string(
        self, fields: Mapping[str, Any], key: str, line: int, problems: list[str], *, required: bool = False
    ) -> str:
        value = fields.get(key)
        if value is None or value == "":
            if required:
                problems.append(f"{self._where(line, key)}: required and missing")
            return ""
        if not isinstance(value, str):
            hint = " (quote long numeric ids: JSON numbers lose digits in many tools)" if isinstance(value, int) else ""
            problems.append(f"{self._where(line, key)}: must be a string, not {type(value).__name__}{hint}")
            return ""
        value = value.strip()
        if required and not value:
            problems.append(f"{self._where(line, key)}: required and blank")
        return value

    def _tags(self, fields: Mapping[str, Any], line: int, problems: list[str]) -> tuple[tuple[str, str], ...]:
        raw = fields.get("tags")
        if raw is None or raw == "":
            return ()
        where = self._where(line, "tags")
        pairs: list[tuple[str, str]] = []
        if isinstance(raw, str):
            for part in raw.split(";"):
                if not part.strip():
                    continue
                key, sep, value = part.partition("=")
                if not sep:
                    problems.append(
                        f"{where}: {clip(part.strip())} is not key=value (write tags as key=value;key2=value2)"
                    )
                    continue
                pairs.append((key.strip(), value.strip()))
        elif isinstance(raw, dict):
            for key, value in raw.items():
                if not isinstance(value, str):
                    problems.append(f"{where}: value of tag {clip(key)} must be a string")
                    continue
                pairs.append((key, value))
        elif isinstance(raw, list):
            for item in raw:
                if not (
                    isinstance(item, dict) and isinstance(item.get("key"), str) and isinstance(item.get("value"), str)
                ):
                    problems.append(f'{where}: each list item must be {{"key": "...", "value": "..."}}')
                    continue
                pairs.append((item["key"], item["value"]))
        else:
            problems.append(f"{where}: must be 'k=v;k2=v2', an object, or a list of {{key, value}}")
            return ()
        seen: set[str] = set()
        for key, value in pairs:
            if not 1 <= len(key) <= 64 or not 1 <= len(value) <= 64:
                problems.append(f"{where}: tag {clip(key)}: keys and values must be 1-64 characters")
            if key in seen:
                problems.append(f"{where}: tag key {clip(key)} appears twice")
            seen.add(key)
        if (reserved := reserved_tag_problem(pairs)) is not None:
            problems.append(f"{where}: {reserved}")
        return tuple(pairs)


def string_hash(value: str) -> int:
    """A string's 8-byte hash (this process's ``hash``, masked to 64 bits).

    Args:
        value: the string.
    """
    return hash(value) & _MASK


class HashSet:
    """Finds repeated strings with 8 bytes a string: hashes in an array, bucketed and sorted.

    A repeated hash is a candidate only; the caller confirms it against the real strings.
    """

    def __init__(self) -> None:
        self._buckets = [array("Q") for _ in range(256)]

    def add(self, value: str) -> None:
        digest = string_hash(value)
        self._buckets[digest & 0xFF].append(digest)

    def duplicates(self) -> set[int]:
        """Sort each bucket in place and return the hashes that occur more than once."""
        found: set[int] = set()
        for index, bucket in enumerate(self._buckets):
            ordered = array("Q", sorted(bucket))
            self._buckets[index] = ordered
            found.update(a for a, b in itertools.pairwise(ordered) if a == b)
        return found

    def contains(self, value: str) -> bool:
        """Membership test; valid after :meth:`duplicates` sorted the buckets."""
        digest = string_hash(value)
        bucket = self._buckets[digest & 0xFF]
        at = bisect.bisect_left(bucket, digest)
        return at < len(bucket) and bucket[at] == digest
