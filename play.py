"""Play a world model: `python play.py checkpoint=PATH` or `pretrained=NAME` (common.hub, e.g. diamond/Breakout)
in a window, or with `record=out.mp4` headless; `m` in the window (`policy=agent` headless) lets the
checkpoint's agent play.

Hydra composes conf/play.yaml; common/play/app.py does the work. Bad input ends in one line, no traceback.
"""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="play")
def main(cfg: DictConfig) -> None:
    from common.play.app import run

    try:
        run(cfg)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - every failure is reported in one line
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
