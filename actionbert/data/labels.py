"""Class labels read from list files or CSVs without a declared class list: no class is invented silently.

Without `classes`, `prepare` takes the classes from the labels it reads, so a slip in a list file would
become a class of its own. What is checked (`check_inferred_labels`), and what happens:

- names and indices mixed (`walk` on one line, `3` on another): an index cannot be matched to a name, and
  each would become a class; refused (ValueError naming the file and lines of one of each). Fix: declare the
  classes (`--classes`, line i = index i) or use one kind of label.
- a likely typo: a label that is rare (used at most 2 + n/10 times, and less often than the other) and one
  edit away from a more frequent label (two for labels of 6 or more characters; or equal up to case and
  separators, `Walking` / `walking` / `walk-ing`): its lines are skipped and reported one by one
  ("suspicious_label": file, line, the label it resembles). Fix the line, or declare the classes.
- integer labels with gaps (0, 1, 3): integer labels keep their value, so a missing index is a class
  without any video; reported once ("empty_class").
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Protocol, Sequence

from actionbert.data.problems import Problem


class _Labelled(Protocol):
    class_name: str | None
    where: str | None
    path: object


def check_inferred_labels(entries: Sequence[_Labelled], problems: list[Problem]) -> list:
    """The entries to keep; likely typos are reported in `problems` and left out (see the module docstring).

    Raises:
        ValueError: the labels mix names and class indices.
    """
    labelled = [e for e in entries if e.class_name is not None]
    indices = [e for e in labelled if e.class_name.isdigit()]
    names = [e for e in labelled if not e.class_name.isdigit()]
    if indices and names:
        raise ValueError(f"class labels mix names and indices, e.g. '{names[0].class_name}' "
                         f"({names[0].where or names[0].path}) and '{indices[0].class_name}' "
                         f"({indices[0].where or indices[0].path}): an index cannot be matched to a name, so each "
                         f"would become a class of its own; declare the classes (--classes FILE, one name per "
                         f"line, line i = index i) or use one kind of label")
    counts = Counter(e.class_name for e in names)
    typo_of = {label: other for label in counts if (other := _resembled(label, counts)) is not None}
    kept = []
    for e in entries:
        other = typo_of.get(e.class_name)
        if other is None:
            kept.append(e)
            continue
        problems.append(Problem(str(e.path), "suspicious_label",
                                f"class '{e.class_name}' ({e.where or 'label'}) looks like a typo of '{other}' "
                                f"({counts[e.class_name]} vs {counts[other]} video(s)); not used, so no class is "
                                f"invented: fix the label, or declare the classes (--classes) to keep it"))
    return kept


def empty_index_classes(classes: Sequence[str], used: set[str], source: str) -> Problem | None:
    """The "empty_class" note when integer labels leave indices without a video (None when none is empty)."""
    if not classes or not all(c.isdigit() for c in classes):
        return None
    empty = [c for c in classes if c not in used]
    if not empty:
        return None
    shown = ", ".join(empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
    return Problem(source, "empty_class", f"integer labels keep their value, so classes 0..{len(classes) - 1} "
                                          f"exist and {len(empty)} of them have no video ({shown}); declare the "
                                          f"classes (--classes) if the labels are not class indices", "kept")


def _resembled(label: str, counts: Counter) -> str | None:
    """The more frequent label `label` is likely a typo of, or None."""
    n = counts[label]
    best = None
    for other, m in counts.items():
        if other == label or m <= n or n > 2 + m // 10:
            continue
        if _similar(label, other) and (best is None or m > counts[best]):
            best = other
    return best


def _similar(a: str, b: str) -> bool:
    if _squash(a) == _squash(b):
        return True
    limit = 2 if min(len(a), len(b)) >= 6 else 1
    return abs(len(a) - len(b)) <= limit and _edits(a.lower(), b.lower()) <= limit


def _squash(label: str) -> str:
    return re.sub(r"[\W_]+", "", label.lower())


def _edits(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]
