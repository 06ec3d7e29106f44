"""Job lists: CSV, JSON and JSON Lines, read as streams and checked row by row.

Every problem names the file, the line and the field. The package's parts:

* :mod:`.common`: the columns, the formats (:func:`detect_format`), a row, a file problem;
* :mod:`.readers`: a file -> numbered rows;
* :mod:`.checks`: a row -> a :class:`~batch.models.Job` or problems; duplicate finding by hash;
* :mod:`.joblist`: :class:`JobList` (the whole-file passes) and its :class:`Validation`.
"""

from __future__ import annotations

from .common import COLUMNS, FAKE_COLUMNS, FORMATS, detect_format
from .joblist import JobList, Validation

__all__ = ["COLUMNS", "FAKE_COLUMNS", "FORMATS", "JobList", "Validation", "detect_format"]
