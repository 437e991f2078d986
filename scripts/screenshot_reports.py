"""Screenshots of the HTML reports in headless Chromium, to look at what a person sees.

Usage: `python scripts/screenshot_reports.py [--out runs/screenshots] [--seeds 2] [--epochs 2]`
(a few minutes on 2 cores; needs Debian's `chromium`: `apt-get install -y chromium`; CI does not run this).

It runs a short demo (`actionbert demo`), evaluates one of its checkpoints with `actionbert eval
--temporal-check`, predicts a longer video made of several synthetic classes in a row plus two short videos and a
broken file with `actionbert predict --report`, then renders these pages at 1280 px wide to PNG:

    demo.png (the demo's report.html), eval.png (report.html of the eval), predict_index.png (index.html),
    predict_video.png (the long video's page)

and prints each page's size. Chromium runs offline-minded (no network services, a fresh empty profile), so a
page that referenced anything outside itself would show it as missing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def actionbert(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "actionbert", *args], check=True)


def long_video(path: Path, classes: list[str], frames_each: int) -> Path:
    """One video of several synthetic classes in a row (a timeline whose top class changes)."""
    from actionbert.data.synthetic import render_video, write_video

    rng = np.random.default_rng(7)
    parts = [render_video(c, rng, num_frames=frames_each, size=(72, 96), clip_len=frames_each) for c in classes]
    return write_video(path, np.concatenate(parts))


def screenshot(page: Path, png: Path, *, height: int) -> Path:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium not found: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size=1280,{height}",
                        f"--screenshot={png}", page.resolve().as_uri()], check=True, capture_output=True)
    return png


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/screenshots")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--videos-per-class", type=int, default=8)
    p.add_argument("--height", type=int, default=2000, help="window height of the screenshots (px)")
    p.add_argument("--reuse", action="store_true", help="keep the demo and eval outputs of a former run in --out "
                                                         "and only write their pages again")
    args = p.parse_args()
    out = Path(args.out)
    demo = out / "demo"
    reuse = args.reuse and (demo / "REPORT.md").is_file() and (out / "eval" / "report.json").is_file()
    if reuse:  # only the pages are written again, from the former run's files
        from actionbert.report import write_ablation_page, write_eval_page

        write_ablation_page(demo / "ablation", demo / "report.html", markdown=demo / "REPORT.md")
        write_eval_page(json.loads((out / "eval" / "report.json").read_text()), out / "eval" / "report.html")
    else:
        actionbert("demo", "--out", str(demo), "--seeds", str(args.seeds), "--epochs", str(args.epochs),
                   "--videos-per-class", str(args.videos_per_class), "--quiet")
    model = sorted((demo / "ablation").glob("head-bert/seed*/best.pt"))[0]
    if not reuse:
        actionbert("eval", str(model), "--data", str(demo / "prepared"), "--temporal-check", "--views", "all",
                   "--out", str(out / "eval"))
    videos = out / "videos"
    classes = sorted(p.name for p in (demo / "videos").iterdir() if p.is_dir())
    long = long_video(videos / "four_actions.mp4", classes[:4], 32)
    shorts = [next((demo / "videos" / c).glob("*.mp4")) for c in classes[:2]]
    broken = videos / "broken.mp4"
    broken.write_bytes(b"this is not a video")
    shutil.rmtree(out / "predict", ignore_errors=True)
    actionbert("predict", str(model), str(long), *map(str, shorts), str(broken), "--hop", "16",
               "--report", str(out / "predict"))
    from actionbert.report import page_name

    pages = {"demo": demo / "report.html", "eval": out / "eval" / "report.html",
             "predict_index": out / "predict" / "index.html", "predict_video": out / "predict" / page_name(long)}
    for name, page in pages.items():
        png = screenshot(page, out / f"{name}.png", height=args.height)
        print(f"{name}: {page} ({page.stat().st_size / 1024:.0f} KiB) -> {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
