"""The train/val split of `prepare`: stratified per class, seeded, and keeping clips of one source together.

When the input does not say, a stratified split per class with `val_fraction`, seeded and independent of
listing order (`stratified_split`). Clips cut from one long video are near duplicates, so with
`group_by="auto"` they are kept in one split: a video listed in a `clips.csv` written by `actionbert clips`
(looked for in the video's folder and its parents up to the data root; its `clip` column is relative to its
own folder) belongs to the group of its `source` video (`clip_groups`); every other video is a group of its
own. See `stratified_split` for the rule.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path
from typing import Sequence

from actionbert.data.cliplist import CLIPS_CSV, read_clip_rows
from actionbert.data.layouts import Entry
from actionbert.data.problems import Problem


def stratified_split(class_names: Sequence[str | None], val_fraction: float, seed: int,
                     keys: Sequence[str] | None = None, groups: Sequence[str] | None = None) -> list[str]:
    """Assign "train" or "val" to each item so every class gets about `round(n * val_fraction)` val items.

    Without `groups`, each class gets exactly that many val items, but at least one val and one train item
    when it has n >= 2 items (and `val_fraction` > 0); a class with one item stays in train. Items are
    ordered by `keys` (e.g. video ids) before a seeded shuffle, so the result does not depend on listing order.

    With `groups` (e.g. the long video each clip was cut from), the items of a group always share a split;
    this is what keeps near-duplicate clips of one source out of both train and val. Rule, per class c with
    n_c items: the target is t_c = round(n_c * val_fraction), raised to 1 and capped at n_c - 1 when
    n_c >= 2 (the no-groups count); then

    1. fill: the groups, sorted by name and shuffled with `seed`, are visited once; a group goes to val when,
       for every class it contains, the class's val items stay at or below t_c and at least one of its items
       stays in train;
    2. guarantee: each class (by name) with items in two or more groups but no val item yet moves one train
       group to val: the one with the fewest items of that class (first in the visiting order on ties) among
       those whose move leaves every class they contain at least one train item (none: the class stays
       without val).

    So a class's val count never exceeds t_c except through step 2 (it then receives one whole group), a
    class with one group, or one item, stays in train, and a class that has items in at least two groups
    always keeps a train item. Groups are identified by `str(group)`; when no two items share a group the
    result is exactly that of `groups=None`.

    Args:
        class_names: class of each item.
        val_fraction: share of each class for val, in [0, 1).
        seed: shuffle seed.
        keys: sort keys of the items (used without groups); default their positions.
        groups: group of each item; default every item alone.

    Returns:
        "train" / "val" per item, in input order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if groups is not None:
        if len(groups) != len(class_names):
            raise ValueError(f"groups has {len(groups)} entries for {len(class_names)} items")
        names = [str(g) for g in groups]
        if len(set(names)) < len(names):
            return _grouped_split([str(c) for c in class_names], names, val_fraction, seed)
    keys = list(keys) if keys is not None else [f"{i:012d}" for i in range(len(class_names))]
    by_class: dict[str, list[int]] = {}
    for i, name in enumerate(class_names):
        by_class.setdefault(str(name), []).append(i)
    result = ["train"] * len(class_names)
    rng = random.Random(seed)
    for name in sorted(by_class):
        members = sorted(by_class[name], key=lambda i: keys[i])
        rng.shuffle(members)
        n = len(members)
        n_val = _val_target(n, val_fraction)
        for i in members[:n_val]:
            result[i] = "val"
    return result


def _val_target(n: int, val_fraction: float) -> int:
    """Val items wanted for a class of n items: round(n * val_fraction), within [1, n - 1] when n >= 2."""
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return n_val


def _grouped_split(class_names: list[str], groups: list[str], val_fraction: float, seed: int) -> list[str]:
    """The group-aware rule of `stratified_split` (see there); returns "train" / "val" per item."""
    count: dict[str, dict[str, int]] = {}  # group -> class -> items
    for c, g in zip(class_names, groups):
        count.setdefault(g, {}).setdefault(c, 0)
        count[g][c] += 1
    n = Counter(class_names)
    target = {c: _val_target(k, val_fraction) for c, k in n.items()}
    order = sorted(count)
    random.Random(seed).shuffle(order)
    in_val: set[str] = set()
    val = dict.fromkeys(n, 0)

    def keeps_train(g: str) -> bool:
        return all(val[c] + k < n[c] for c, k in count[g].items())

    for g in order:
        if all(val[c] + k <= target[c] for c, k in count[g].items()) and keeps_train(g):
            in_val.add(g)
            for c, k in count[g].items():
                val[c] += k
    if val_fraction > 0:
        for c in sorted(n):
            candidates = [g for g in order if c in count[g]]
            if val[c] or len(candidates) < 2:
                continue
            movable = [g for g in candidates if g not in in_val and keeps_train(g)]
            if movable:
                g = min(movable, key=lambda g: count[g][c])  # min keeps the first of equals: visiting order
                in_val.add(g)
                for d, k in count[g].items():
                    val[d] += k
    return ["val" if g in in_val else "train" for g in groups]


def assign_splits(entries: list[Entry], val_fraction: float, seed: int,
                   groups: list[str] | None = None) -> list[str]:
    """Keep the splits the input gave; split the rest by class (whole `groups` at a time, when given). When
    the input names no val video at all, its train videos are split too (e.g. `DATA/train` + `DATA/test`, or
    a Kinetics CSV of train rows)."""
    splits = [e.split for e in entries]
    splittable = (None,) if "val" in splits else (None, "train")
    open_items = [i for i, s in enumerate(splits) if s in splittable]
    chosen = stratified_split([entries[i].class_name for i in open_items], val_fraction, seed,
                              keys=[entries[i].video_id for i in open_items],
                              groups=None if groups is None else [groups[i] for i in open_items])
    for i, s in zip(open_items, chosen):
        splits[i] = s
    return splits


def own_group(path: Path) -> str:
    """The group of a video cut from nothing we know of: its own absolute path (symbolic links of its folders
    resolved, the same spelling `clip_groups` gives the source videos of clips)."""
    return os.path.join(os.path.realpath(Path(path).parent), Path(path).name)


def clip_groups(paths: Sequence[Path], root: Path, problems: list[Problem]) -> list[str]:
    """The split group of each video: the `source` of the row naming it in a clips.csv, else `own_group`.

    The clips.csv files looked at are those in the video's folder and its parents up to `root` (for a video
    outside `root`, its folder and the one above, where `cut_clips` puts the record of labelled clips); each
    is read once. A `clip` cell is relative to its csv's folder. An absolute `source` is resolved like
    `own_group` (so a source video that is itself in the dataset shares its clips' group); a relative one is
    kept as written (it was relative to where `cut_clips` ran). A clips.csv that cannot be read is reported
    in `problems` and ignored.
    """
    root_real = os.path.realpath(root)
    tables: dict[str, dict[str, str]] = {}  # folder (resolved) -> {clip path: group}, {} without clips.csv
    groups = []
    for path in paths:
        folder = os.path.realpath(Path(path).parent)
        key = os.path.join(folder, Path(path).name)
        group = None
        for candidate in _folders_up(folder, root_real):
            if candidate not in tables:
                tables[candidate] = _read_clips_csv(Path(candidate) / CLIPS_CSV, problems)
            group = tables[candidate].get(key)
            if group is not None:
                break
        groups.append(group if group is not None else key)
    return groups


def _folders_up(folder: str, root: str) -> list[str]:
    """`folder` and its parents up to `root` (both resolved); `folder` and its parent when outside `root`."""
    if os.path.commonpath([folder, root]) != root:
        return [folder, os.path.dirname(folder)]
    chain = [folder]
    while chain[-1] != root:
        chain.append(os.path.dirname(chain[-1]))
    return chain


def _read_clips_csv(file: Path, problems: list[Problem]) -> dict[str, str]:
    """{resolved clip path: group of its source} from a clips.csv of `cut_clips`; {} when there is none."""
    try:
        rows = read_clip_rows(file)
    except (OSError, ValueError) as e:
        problems.append(Problem(str(file), "bad_clips_csv", f"not used to group clips by source video: {e}"))
        return {}
    folder = os.path.realpath(file.parent)
    table = {}
    for row in rows:
        if row["clip"] and row["source"]:
            source = row["source"]
            group = own_group(Path(source)) if os.path.isabs(source) else source
            table[os.path.normpath(os.path.join(folder, row["clip"]))] = group
    return table
