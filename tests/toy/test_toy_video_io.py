import imageio.v2 as imageio
import numpy as np
import pytest

from tmd_core.errors import InputError
from tmd_core.toy.video_io import make_grid, plot_quality_vs_nfe, to_frames, write_gif, write_mp4, write_video
from tmd_core.toy.world import Prompt, render_batch, render_clip


def test_frames_are_nearest_neighbour_upscaled_uint8():
    clip = render_clip("a red square moving right fast", 0)
    frames = to_frames(clip, scale=3)
    assert frames.shape == (8, 96, 96, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames[:, ::3, ::3], to_frames(clip, scale=1))
    assert frames[0, 0, 0].tolist() == [0, 0, 0]


def test_gif_and_mp4_are_written_and_read_back(tmp_path):
    clip = render_clip("a cyan circle moving down fast", 1)
    gif = imageio.mimread(write_gif(tmp_path / "a.gif", clip, fps=8))
    assert len(gif) == 8 and gif[0].shape[:2] == (128, 128)
    assert np.abs(gif[3][..., :3].astype(int) - to_frames(clip, 4)[3]).max() <= 2  # lossless apart from palette
    path = write_video(tmp_path / "sub" / "a.mp4", clip)
    reader = imageio.get_reader(path, format="FFMPEG")
    frames = list(reader.iter_data())
    assert len(frames) == 8 and frames[0].shape == (256, 256, 3)
    assert reader.get_meta_data()["fps"] == 8
    with pytest.raises(InputError, match=".gif or .mp4"):
        write_video(tmp_path / "a.avi", clip)


def test_grid_lays_out_labelled_rows(tmp_path):
    prompts = [Prompt("red", "square", "left", "fast"), Prompt("blue", "cross", "still")]
    a, b = render_batch(prompts, [0, 1]), render_batch(prompts, [2, 3])
    grid = make_grid([("teacher", a), ("TMD 2x2", b)], column_labels=[p.text for p in prompts], scale=2, pad=4)
    f, h, w, _ = grid.shape
    assert f == 8 and h > 2 * 64 and w > 2 * 64
    # the clips appear unchanged in the bottom-right cell
    assert np.array_equal(grid[:, h - 4 - 64:h - 4, w - 4 - 64:w - 4], to_frames(b[1], 2))
    path = write_mp4(tmp_path / "grid.mp4", grid)
    assert sum(1 for _ in imageio.get_reader(path, format="FFMPEG").iter_data()) == 8
    with pytest.raises(InputError, match="same number of clips"):
        make_grid([("a", a), ("b", b[:1])])


def test_plot_quality_vs_nfe_writes_a_png(tmp_path):
    rows = [{"name": "real data", "overall": 0.99}, {"name": "teacher", "nfe": 100, "overall": 0.9},
            {"name": "TMD 2x2", "method": "TMD", "nfe": 2.6, "overall": 0.85},
            {"name": "TMD 1x1", "method": "TMD", "nfe": 1.2, "overall": 0.7}]
    path = plot_quality_vs_nfe(rows, tmp_path / "plot.png")
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def _bench_rows():
    """The README ToyBench table's methods and NFEs (15 rows: the crowded case)."""
    rows = [{"name": "real data (renderer)", "overall": 0.995},
            {"name": "teacher 50 steps CFG 4", "method": "teacher CFG", "nfe": 100, "overall": 0.750}]
    rows += [{"name": f"teacher Euler {k} NFE", "method": "teacher Euler", "nfe": k, "overall": v}
             for k, v in ((1, 0.639), (2, 0.638), (3, 0.648), (4, 0.650))]
    rows += [{"name": f"DMD2-v {k}-step", "method": "DMD2-v", "nfe": k, "overall": v}
             for k, v in ((1, 0.650), (2, 0.672), (3, 0.668))]
    rows += [{"name": f"TMD outer {m} x inner {n}", "method": f"TMD outer {m}", "nfe": nfe, "overall": v}
             for m, n, nfe, v in ((1, 1, 1, 0.492), (1, 2, 1.167, 0.511), (1, 4, 1.5, 0.503), (2, 1, 2, 0.526),
                                  (2, 2, 2.333, 0.533), (2, 4, 3, 0.531))]
    return rows


def test_plot_labels_overlap_nothing():
    from tmd_core.toy.video_io import draw_quality_vs_nfe

    fig = draw_quality_vs_nfe(_bench_rows(), "overall", "ToyBench")
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    labels = [t for t in ax.texts]
    boxes = [t.get_window_extent(renderer) for t in labels]
    legend = ax.get_legend().get_window_extent(renderer)
    assert len(labels) >= 10  # most points keep a label
    assert {t.get_text() for t in labels} <= {"50 steps CFG 4", "1 NFE", "2 NFE", "3 NFE", "4 NFE", "1-step", "2-step",
                                              "3-step", "inner 1", "inner 2", "inner 4"}
    for i, a in enumerate(boxes):
        assert not a.overlaps(legend)
        assert not any(a.overlaps(b) for b in boxes[i + 1:]), labels[i].get_text()


def test_a_100k_character_label_makes_a_normal_video(tmp_path):
    clip = render_batch([Prompt("red", "square", "left", "fast")], [0])
    grid = make_grid([("TMD", clip)], column_labels=["red " * 25000], scale=2)
    assert grid.shape[1] < 200  # three lines of caption at most
    path = write_video(tmp_path / "long.mp4", grid)
    assert sum(1 for _ in imageio.get_reader(path, format="FFMPEG").iter_data()) == 8


def test_a_failed_video_write_leaves_no_file(tmp_path, monkeypatch):
    import tmd_core.toy.video_io as vio

    def broken(path, frames, fps, scale):
        open(path, "wb").write(b"half")
        raise BrokenPipeError("encoder died")

    monkeypatch.setitem(vio.write_video.__globals__, "write_mp4", broken)
    with pytest.raises(BrokenPipeError):
        write_video(tmp_path / "x.mp4", render_clip("a red square moving left fast", 0))
    assert list(tmp_path.iterdir()) == []


def test_quick_bench_measures_diversity_as_the_readme_does():
    from tmd_core.toy.bench import BENCH_SEEDS
    from tmd_core.toy.demo import QUICK_PROMPTS, quick_pairs

    pairs = quick_pairs()
    by_prompt = {}
    for p, s in pairs:
        by_prompt.setdefault(p.text, []).append(s)
    assert len(by_prompt) == QUICK_PROMPTS and all(sorted(s) == sorted(BENCH_SEEDS) for s in by_prompt.values())
