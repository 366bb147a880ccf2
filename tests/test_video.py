"""Videos keep their frame rate: GIF frame delays (whole centiseconds) average to exactly 1000/fps ms."""

import numpy as np
import pytest
from PIL import Image

from common.video import gif_durations, read_video, write_video


def gif_delays(path) -> list[int]:
    """Every frame's delay in ms, as a GIF reader sees them."""
    with Image.open(path) as im:
        delays = []
        for i in range(im.n_frames):
            im.seek(i)
            delays.append(im.info["duration"])
    return delays


@pytest.mark.parametrize("fps", [15, 30, 24, 10, 7])
def test_gif_delays_average_to_the_frame_rate(tmp_path, fps):
    frames = np.random.default_rng(fps).integers(0, 256, (37, 8, 8, 3), dtype=np.uint8)
    path = write_video(tmp_path / "v.gif", frames, fps=fps)
    delays = gif_delays(path)
    assert len(delays) == len(frames) and np.array_equal(read_video(path), frames)
    assert abs(sum(delays) / len(delays) - 1000 / fps) < 1.0  # over the file
    assert all(d % 10 == 0 for d in delays) and max(delays) - min(delays) <= 10
    # every prefix stays within one centisecond of the real clock: no drift
    assert np.all(np.abs(np.cumsum(delays) - 1000 / fps * np.arange(1, len(delays) + 1)) <= 5)


def test_gif_repeated_frames_keep_the_time(tmp_path):
    """GIF writers merge a frame equal to the previous one into it: fewer frames, same total time."""
    frames = np.random.default_rng(0).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    frames[5] = frames[4]
    delays = gif_delays(write_video(tmp_path / "v.gif", frames, fps=15))
    assert len(delays) == 11 and abs(sum(delays) - 12 * 1000 / 15) <= 5


def test_gif_durations():
    assert gif_durations(3, 15) == [70, 60, 70]
    assert sum(gif_durations(15, 15)) == 1000 and sum(gif_durations(30, 30)) == 1000
    with pytest.raises(ValueError, match="fps"):
        gif_durations(3, 0)
