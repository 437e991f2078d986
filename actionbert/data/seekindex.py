"""The seek index: which decoded frame a packet timestamp names, so a read can seek instead of decoding from the
first frame (see `decode`'s module docstring for when that is exact).

`SeekIndex` is an explicit object: it memoises each file's packet table (keyed by path, size and mtime, so a
changed file is read again) and trusts a table only for a frame count it is given (from `prepare`), never for
one remembered from earlier work in the process; so a read gives the same frames whatever ran before it.
`decode.read_frames` uses `DEFAULT_INDEX` unless given another.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from dataclasses import dataclass

import av.error

from actionbert.data.container import NO_SEEK_FORMATS, ffmpeg_message, file_key, open_video

class MidStreamError(Exception):
    """A decoder error part-way through a file."""


class SeekMismatch(Exception):
    """A frame's timestamp did not match its expected index (the timestamp table cannot be used)."""



def indexed_frames(container, stream, table: PacketTable, first: int):
    """(index, frame) from frame `first` on, indices from the timestamp table.

    Seeks to the last keyframe at or before `first` (if that is not frame 0). Until the packets reach frame
    `first`'s timestamp the decoder skips non-reference frames: they are not shown in the clip and no later
    frame needs them, which saves about a quarter of the pre-roll decoding on typical H.264. Every frame from
    `first` on must carry the timestamp of the next index, else `SeekMismatch`.
    """
    target = table.pts[first]
    start = table.key_ranks[bisect.bisect_right(table.key_ranks, first) - 1]
    expected = first  # index the next delivered frame must have
    try:
        if start > 0:
            container.seek(table.pts[start], stream=stream, backward=True, any_frame=False)
        context = stream.codec_context
        for packet in container.demux(stream):
            context.skip_frame = "NONREF" if packet.pts is not None and packet.pts < target else "DEFAULT"
            for frame in context.decode(packet):
                index = table.rank.get(frame.pts)
                if index is None:
                    raise SeekMismatch()
                if index < first:
                    continue
                if index != expected:
                    raise SeekMismatch()
                expected += 1
                yield index, frame
    except av.error.FFmpegError as e:
        if expected == first:
            raise SeekMismatch() from None  # nothing delivered yet: let the counting pass decide
        raise MidStreamError(ffmpeg_message(e)) from None
    if expected == first:
        raise SeekMismatch()  # the file ended before frame `first`: let the counting pass decide


@dataclass(frozen=True)
class PacketTable:
    """Presentation timestamps of a file's video packets in display order, their ranks, keyframe ranks."""

    pts: list[int]
    rank: dict[int, int]
    key_ranks: list[int]


class SeekIndex:
    """Packet tables of the files read so far (at most `capacity`, least recently used dropped), and the rule
    for when one may name frames. Thread-safe; each DataLoader worker process has its own copy."""

    def __init__(self, capacity: int = 512):
        self._tables = _LRU(capacity)

    def table(self, path, first: int, num_frames: int | None) -> PacketTable | None:
        """The timestamp table of `path` when it maps indices exactly and helps (first > 0), else None.

        Trusted only when the packet count equals the decoded frame count `num_frames` (None: unknown, never
        trusted) and the format's timestamps are usable; each read still checks every delivered frame.
        """
        if first == 0 or num_frames is None:
            return None
        key = file_key(path)
        table = self._tables.get(key)
        if table is None:
            table = packet_table(path)
            self._tables.put(key, table or ())
        if not table or len(table.pts) != num_frames or not table.key_ranks or table.key_ranks[0] != 0:
            return None
        return table


def packet_table(path) -> PacketTable | None:
    """Read the video packets' timestamps and keyframe flags (demuxing only: a few milliseconds for a short
    clip). None when the format's timestamps are unreliable, missing or repeated."""
    container, stream = open_video(path)
    with container:
        if container.format.name in NO_SEEK_FORMATS:
            return None
        pts, keys = [], []
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                if packet.pts is None:
                    return None
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
        except av.error.FFmpegError:
            return None
    ordered = sorted(pts)
    if len(set(ordered)) != len(ordered):
        return None
    rank = {p: i for i, p in enumerate(ordered)}
    return PacketTable(pts=ordered, rank=rank, key_ranks=sorted(rank[k] for k in keys))


class _LRU:
    """A small thread-safe least-recently-used map (per process; each DataLoader worker has its own)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            if key not in self.items:
                return None
            self.items.move_to_end(key)
            return self.items[key]

    def put(self, key, value) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.capacity:
                self.items.popitem(last=False)


#: The index `decode.read_frames` uses unless given another.
DEFAULT_INDEX = SeekIndex()
