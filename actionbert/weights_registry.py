"""The known public pretrained weight files, by name: data only (downloading and caching live in `actionbert.hub`).

Every fact below carries the place it was read from. Hashes are never made up: an entry holds either the hash its
publisher states (torch.hub's file-name convention `<name>-<first hex digits of SHA-256>.<ext>`) with a note on
who checks it, or no hash at all and a note saying where to get the file by hand. `actionbert models --weights`
lists the entries; `--pretrained NAME`, `actionbert.load_weights(model, "NAME")` and `actionbert convert NAME` use
them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WeightsEntry:
    """One known weights file.

    Args:
        name: the name users type (`--pretrained NAME`).
        file_name: the file's name in the cache (`<torch hub dir>/checkpoints/`) and on a mirror.
        source: its format, a key of `actionbert.weights.FILTERS` (the `--pretrained-source` value).
        backbone: the actionbert backbone (`actionbert.models.BACKBONES`) the file's tensors fit.
        clip_len: frames per clip it was trained on.
        num_classes: outputs of its classifier.
        url: where the publisher serves it; None when there is no stable download (see `where_to_get`).
        sha256: the full SHA-256 (64 hex digits) or the publisher's prefix of it; None when none is published.
        hash_note: where the hash comes from and whether the publisher's own loader checks it.
        classes: name of a class list resolved at run time (`class_names`), None when no label map is known.
        size_mib: file size as its publisher states it, in MiB (torchvision's `_file_size`, which it labels MB:
            r2plus1d_18's 31,505,325 fp32 parameters are 120.2 MiB), None when unknown.
        pretrained_on: the data it was trained on.
        licence: licence of the file (or of the code that publishes it, when the file has none of its own).
        citation: the paper(s) to cite.
        where_to_get: for files without `url`: how a user obtains the file.
    """

    name: str
    file_name: str
    source: str
    backbone: str
    clip_len: int
    num_classes: int
    url: str | None = None
    sha256: str | None = None
    hash_note: str = ""
    classes: str | None = None
    size_mib: float | None = None
    pretrained_on: str = ""
    licence: str = ""
    citation: str = ""
    where_to_get: str = ""


# ------------------------------------------------------------------------------------- torchvision (Kinetics-400)
# URLs, hash prefixes and sizes: torchvision/models/video/resnet.py (installed torchvision 0.29.1; also
# github.com/pytorch/vision, same path): R2Plus1D_18_Weights / R3D_18_Weights / MC3_18_Weights.KINETICS400_V1,
# `url=` and `meta["_file_size"]`. torchvision loads them with `weights.get_state_dict(progress=progress,
# check_hash=True)` (`_video_resnet` in that file), so torch.hub checks the SHA-256 prefix in the file name.
# Clip length 16: `_COMMON_META["_docs"]` ("clip_len=16", frame_rate=15). Classes: `_KINETICS400_CATEGORIES`
# (torchvision/models/_meta.py), read from torchvision at run time. Licence: torchvision's LICENSE (BSD-3-Clause).
_TV = "https://download.pytorch.org/models/"
_TV_HASH = "torchvision checks this prefix itself (check_hash=True in torchvision/models/video/resnet.py)"
_TV_LICENCE = "BSD-3-Clause (pytorch/vision LICENSE); trained on Kinetics-400: check the dataset's terms for your use"
_TRAN = ("D. Tran, H. Wang, L. Torresani, J. Ray, Y. LeCun, M. Paluri, A Closer Look at Spatiotemporal "
         "Convolutions for Action Recognition, CVPR 2018")
_KINETICS = "Kinetics-400 (torchvision's reference training recipe)"

# ------------------------------------------------------------------------------------------------- IG-65M R(2+1)D-34
# URLs: github.com/moabitcoin/ig65m-pytorch ig65m/models.py `model_urls` (HEAD fc749e2) and its README table
# (release v1.0.0). Class counts: the asserts in ig65m/models.py at HEAD (32-frame IG-65M: 359, 8-frame: 487,
# Kinetics fine-tuned: 400) and README "Notes"; the reference implementation loads the 32-frame file strictly into
# a 359-class model (artest08/LateTemporalModeling3DCNN models/rgb_r2plus1d.py). Kinetics label order: the README
# points to Showmax/kinetics-downloader resources/classes.json @ 68bd8bc; that list equals torchvision's
# _KINETICS400_CATEGORIES element for element (compared when this registry was written). Plain IG-65M models: "no
# label map available" (README). Hash: the 8 hex digits of each file name follow torch.hub's naming convention;
# ig65m/models.py loads with torch.hub.load_state_dict_from_url *without* check_hash, so the publisher's own code
# never checks them, and they could not be confirmed against the files here (no internet).
_IG = "https://github.com/moabitcoin/ig65m-pytorch/releases/download/v1.0.0/"
_IG_HASH = ("file-name suffix (torch.hub convention: first digits of SHA-256); the publisher's loader does not "
            "check it (ig65m/models.py) and it was not confirmed against the file")
_IG_LICENCE = ("MIT (moabitcoin/ig65m-pytorch LICENSE.md, the conversion); original Caffe2 weights from "
               "facebookresearch/VMZ (Apache-2.0, its README)")
_GHADIYARAM = ("D. Ghadiyaram, M. Feiszli, D. Tran, X. Yan, H. Wang, D. Mahajan, Large-scale weakly-supervised "
               "pre-training for video action recognition, CVPR 2019; " + _TRAN)

# --------------------------------------------------------------------------------------------- Hara ResNeXt-101
# github.com/kenshohara/3D-ResNets-PyTorch README (commit 9c7e7f4 and later, "Old pretrained models"): Google Drive
# folder 1zvl89AgFAApbH0At-gMuZSeQB_LpNP-M holds resnext-101-kinetics.pth (16 frames, `--resnext_cardinality 32
# --resnet_shortcut B`); Hara added resnext-101-64f-kinetics.pth there (3D-ResNets-PyTorch issue #35, 2018-03-06,
# and issue #194). The reference implementation loads ./weights/resnext-101-64f-kinetics.pth for its 64-frame
# ResNeXt models (utils/model_path.py) and shipped it in the OneDrive bundle of its README, a link reported dead
# (LateTemporalModeling3DCNN issue #20). No hash is published; the class order of Hara's files is not documented.
_HARA_DRIVE = ("Kensho Hara's Google Drive folder of (old) pretrained models, linked from the README of "
               "github.com/kenshohara/3D-ResNets-PyTorch: "
               "https://drive.google.com/drive/folders/1zvl89AgFAApbH0At-gMuZSeQB_LpNP-M")
_HARA = ("K. Hara, H. Kataoka, Y. Satoh, Can Spatiotemporal 3D CNNs Retrace the History of 2D CNNs and ImageNet?, "
         "CVPR 2018")
_NO_HASH = "no hash published: a file put in place by hand is used as it is, unverified"

# ------------------------------------------------------------------------------------ reference implementation
# artest08/LateTemporalModeling3DCNN publishes no trained checkpoints (its issue #18 "attach model weights to
# github release" is open); its training scripts write checkpoint/<dataset>_<arch>_split<k>/model_best.pth.tar
# (two_stream_bert2.py `saveLocation`). Architectures: the arch strings in that repository's models/ (see
# actionbert.weights.REFERENCE_ARCHS); HMDB51 has 51 classes (two_stream_bert2.py `build_model`).
_REF_LICENCE = "MIT (artest08/LateTemporalModeling3DCNN LICENSE)"
_KALFAOGLU = ("M. E. Kalfaoglu, S. Kalkan, A. A. Alatan, Late Temporal Modeling in 3D CNN Architectures with BERT "
              "for Action Recognition, ECCV Workshops 2020")


def _reference_note(arch: str) -> str:
    return (f"not published: train it with the reference code (two_stream_bert2.py --arch={arch} "
            f"--dataset=hmdb51 --split=1), which writes checkpoint/hmdb51_{arch}_split1/model_best.pth.tar")


_ENTRIES = (
    WeightsEntry("kinetics400_r2plus1d_18", "r2plus1d_18-91a641e6.pth", "torchvision", "r2plus1d_18", 16, 400,
                 url=_TV + "r2plus1d_18-91a641e6.pth", sha256="91a641e6", hash_note=_TV_HASH,
                 classes="kinetics400", size_mib=120.318, pretrained_on=_KINETICS, licence=_TV_LICENCE,
                 citation=_TRAN),
    WeightsEntry("kinetics400_r3d_18", "r3d_18-b3b3357e.pth", "torchvision", "r3d_18", 16, 400,
                 url=_TV + "r3d_18-b3b3357e.pth", sha256="b3b3357e", hash_note=_TV_HASH,
                 classes="kinetics400", size_mib=127.359, pretrained_on=_KINETICS, licence=_TV_LICENCE,
                 citation=_TRAN),
    WeightsEntry("kinetics400_mc3_18", "mc3_18-a90a0ba3.pth", "torchvision", "mc3_18", 16, 400,
                 url=_TV + "mc3_18-a90a0ba3.pth", sha256="a90a0ba3", hash_note=_TV_HASH,
                 classes="kinetics400", size_mib=44.672, pretrained_on=_KINETICS, licence=_TV_LICENCE,
                 citation=_TRAN),
    WeightsEntry("ig65m_r2plus1d_34_32f", "r2plus1d_34_clip32_ig65m_from_scratch-449a7af9.pth", "ig65m",
                 "r2plus1d_34", 32, 359, url=_IG + "r2plus1d_34_clip32_ig65m_from_scratch-449a7af9.pth",
                 sha256="449a7af9", hash_note=_IG_HASH, pretrained_on="IG-65M (65M Instagram videos)",
                 licence=_IG_LICENCE, citation=_GHADIYARAM),
    WeightsEntry("ig65m_r2plus1d_34_8f", "r2plus1d_34_clip8_ig65m_from_scratch-9bae36ae.pth", "ig65m",
                 "r2plus1d_34", 8, 487, url=_IG + "r2plus1d_34_clip8_ig65m_from_scratch-9bae36ae.pth",
                 sha256="9bae36ae", hash_note=_IG_HASH, pretrained_on="IG-65M (65M Instagram videos)",
                 licence=_IG_LICENCE, citation=_GHADIYARAM),
    WeightsEntry("ig65m_kinetics400_r2plus1d_34_32f", "r2plus1d_34_clip32_ft_kinetics_from_ig65m-ade133f1.pth",
                 "ig65m", "r2plus1d_34", 32, 400,
                 url=_IG + "r2plus1d_34_clip32_ft_kinetics_from_ig65m-ade133f1.pth", sha256="ade133f1",
                 hash_note=_IG_HASH, classes="kinetics400", pretrained_on="IG-65M, fine-tuned on Kinetics-400",
                 licence=_IG_LICENCE, citation=_GHADIYARAM),
    WeightsEntry("ig65m_kinetics400_r2plus1d_34_8f", "r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth",
                 "ig65m", "r2plus1d_34", 8, 400,
                 url=_IG + "r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth", sha256="0aa0550b",
                 hash_note=_IG_HASH, classes="kinetics400", pretrained_on="IG-65M, fine-tuned on Kinetics-400",
                 licence=_IG_LICENCE, citation=_GHADIYARAM),
    WeightsEntry("hara_resnext101_kinetics", "resnext-101-kinetics.pth", "hara", "resnext101_3d", 16, 400,
                 hash_note=_NO_HASH, pretrained_on="Kinetics-400", licence="MIT (kenshohara/3D-ResNets-PyTorch "
                 "LICENSE)", citation=_HARA, where_to_get=f"download resnext-101-kinetics.pth from {_HARA_DRIVE}"),
    WeightsEntry("hara_resnext101_64f_kinetics", "resnext-101-64f-kinetics.pth", "hara", "resnext101_3d", 64, 400,
                 hash_note=_NO_HASH, pretrained_on="Kinetics-400", licence="MIT (kenshohara/3D-ResNets-PyTorch "
                 "LICENSE)", citation=_HARA, where_to_get=f"download resnext-101-64f-kinetics.pth from "
                 f"{_HARA_DRIVE} (the reference implementation uses this file)"),
    WeightsEntry("reference_hmdb51_r2plus1d_34_bert_32f", "hmdb51_rgb_r2plus1d_32f_34_bert10_split1.pth.tar",
                 "reference", "r2plus1d_34", 32, 51, hash_note=_NO_HASH, pretrained_on="HMDB51 split 1 (from "
                 "IG-65M)", licence=_REF_LICENCE, citation=_KALFAOGLU,
                 where_to_get=_reference_note("rgb_r2plus1d_32f_34_bert10")),
    WeightsEntry("reference_hmdb51_resnext101_bert_frmb_64f",
                 "hmdb51_rgb_resneXt3D64f101_bert10_FRMB_split1.pth.tar", "reference", "resnext101_3d", 64, 51,
                 hash_note=_NO_HASH, pretrained_on="HMDB51 split 1 (from Kinetics-400)", licence=_REF_LICENCE,
                 citation=_KALFAOGLU, where_to_get=_reference_note("rgb_resneXt3D64f101_bert10_FRMB")),
)
REGISTRY: dict[str, WeightsEntry] = {e.name: e for e in _ENTRIES}


def _kinetics400() -> list[str]:
    """torchvision's Kinetics-400 class names (its public weights metadata), read at run time, never copied here."""
    from torchvision.models.video import R2Plus1D_18_Weights

    return list(R2Plus1D_18_Weights.KINETICS400_V1.meta["categories"])


# Class lists an entry may name in `classes`, resolved only when asked for.
CLASS_LISTS = {"kinetics400": _kinetics400}


def class_names(entry: WeightsEntry) -> list[str] | None:
    """The entry's class names in classifier order, or None when no label map is known."""
    return None if entry.classes is None else CLASS_LISTS[entry.classes]()
