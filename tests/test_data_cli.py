"""`actionbert prepare` and `actionbert clips` from the command line."""

from actionbert.cli import main


def test_prepare_command(tmp_path, video_tools, capsys):
    for cls in ("a", "b"):
        for k in range(2):
            video_tools.write_coded(tmp_path / "data" / cls / f"{k}.mp4", 8)
    (tmp_path / "data" / "a" / "empty.mp4").touch()
    code = main(["prepare", str(tmp_path / "data"), "--out", str(tmp_path / "p"), "--cache", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "2 classes, 2 train, 2 val videos (folder layout)" in out
    assert "1 file(s) skipped" in out and "zero-byte file" in out
    assert (tmp_path / "p" / "problems.csv").is_file() and any((tmp_path / "p" / "cache").iterdir())


def test_prepare_without_usable_videos_fails(tmp_path, capsys):
    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        (tmp_path / "data" / cls / "x.mp4").write_text("nope")
    assert main(["prepare", str(tmp_path / "data"), "--out", str(tmp_path / "p"), "--quiet"]) == 1
    assert "no usable training video" in capsys.readouterr().err


def test_clips_command(tmp_path, video_tools, capsys):
    src = video_tools.write_coded(tmp_path / "long.mp4", 50)
    assert main(["clips", str(src), "--out", str(tmp_path / "c"), "--method", "fixed", "--length", "0.8",
                 "--quiet"]) == 0
    assert "2 clip(s) written" in capsys.readouterr().out
    assert (tmp_path / "c" / "clips.csv").read_text().count("\n") == 3
    bad = tmp_path / "cuts.csv"
    bad.write_text("long.mp4,1,0\n")
    assert main(["clips", "--out", str(tmp_path / "d"), "--method", "csv", "--csv", str(bad), "--quiet"]) == 2
    assert "cuts.csv: line 1: end 0 is not after start 1" in capsys.readouterr().err
    assert main(["clips", "--out", str(tmp_path / "e"), "--quiet"]) == 2
