"""Listing the videos of a folder-per-class dataset safely: symbolic-link loops, links and duplicates.

Rules (`ClassFolderWalk`):

- Every real folder is walked at most once (identified by its `(st_dev, st_ino)`), and a link to a folder
  above it (an ancestor: `ln -s .. data/walk/up`) is never followed, so a loop cannot make the walk endless.
- A link to a folder that lies inside the dataset (a folder the walk reaches without following links) is
  not followed: that folder's videos are listed once, under their own path.
- A link to a folder outside the dataset is followed (a common way to assemble a dataset), once: a second
  link to the same folder, or to a folder inside it that was already walked, is not followed.
- Each link not followed is reported ("symlink_skipped", with its target and why).
- A video's label is the class folder its path starts with under the data root, as the user laid it out
  (`DATA/<class>/...`; for a followed link, the class folder holding the link).
- Files: a file reachable under two paths (a file link, a hard link) is listed once; `prepare` drops the
  second path as a "duplicate" by file identity, naming the first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from actionbert.data.cliplist import CLIPS_CSV
from actionbert.data.decode import is_frame_folder
from actionbert.data.problems import Problem

_Key = tuple[int, int]


def folder_key(path: str | os.PathLike) -> _Key | None:
    """(st_dev, st_ino) of the folder `path` leads to (links followed), None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class ClassFolderWalk:
    """Walks the class folders of one dataset (see the module docstring).

    Args:
        root: the dataset folder: links to folders it contains (without links) are not followed.
        problems: where links not followed are reported.
    """

    def __init__(self, root: Path, problems: list[Problem]):
        self.problems = problems
        self.inside: dict[_Key, str] = {}  # real folders of the dataset, reached without following links
        for folder, dirs, _ in os.walk(root, followlinks=False):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            key = folder_key(folder)
            if key is not None:
                self.inside.setdefault(key, folder)
        self.walked: dict[_Key, str] = {}
        self.root_key = folder_key(root)

    def class_files(self, folder: Path, parents: tuple[Path, ...] = ()) -> Iterator[Path]:
        """The files under the class folder `folder` (any extension: non-videos get reported; clips.csv is
        left out); a sub-folder of images without sub-folders is a frame-folder video, yielded as one path.
        `parents`: the folders between the root and `folder` (e.g. `DATA/train`). Nothing when `folder`
        itself is a link not to follow."""
        ancestors = (self.root_key, *(folder_key(p) for p in parents))
        if not self._skipped(folder, ancestors):
            yield from self._files(folder, ancestors)

    def _files(self, folder: Path, ancestors: tuple[_Key | None, ...]) -> Iterator[Path]:
        key = folder_key(folder)
        ancestors = (*ancestors, key)
        self.walked.setdefault(key, str(folder))
        try:
            items = sorted(folder.iterdir(), key=lambda p: p.name)
        except OSError as e:
            self.problems.append(Problem(str(folder), "unreadable", f"folder cannot be listed ({e.strerror or e})"))
            return
        for item in items:
            if item.name.startswith("."):
                continue
            if not item.is_dir():
                if item.name != CLIPS_CSV:  # the record `cut_clips` keeps beside its clips, read for the split
                    yield item
            elif not self._skipped(item, ancestors):
                if is_frame_folder(item) and not any(d.is_dir() for d in item.iterdir()):
                    yield item
                else:
                    yield from self._files(item, ancestors)

    def _skipped(self, item: Path, ancestors: tuple[_Key | None, ...]) -> bool:
        """Whether the folder `item` is not walked (reported when so)."""
        key = folder_key(item)
        if key is None:
            return False  # cannot be read: listing it reports that
        target = os.path.realpath(item)
        if key in ancestors:
            why = "a folder above it: following it would loop"
        elif item.is_symlink() and key in self.inside:
            why = f"a folder inside the dataset: its videos are listed under {self.inside[key]}"
        elif key in self.walked:
            why = f"a folder already listed as {self.walked[key]}"
        else:
            return False
        self.problems.append(Problem(str(item), "symlink_skipped", f"not followed: leads to {target}, {why}"))
        return True
