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
