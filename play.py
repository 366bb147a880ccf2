"""Play a world model: `python play.py checkpoint=PATH` or `pretrained=NAME` (common.hub, e.g. diamond/Breakout)
in a window, or with `record=out.mp4` headless; `m` in the window (`policy=agent` headless) lets the
checkpoint's agent play.

Hydra composes conf/play.yaml; common/play/app.py does the work. Bad input ends in one line, no traceback.
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="play")
def main(cfg: DictConfig) -> None:
    from common.cli import run_reporting_errors
    from common.play.app import run

    run_reporting_errors(run, cfg)


if __name__ == "__main__":
    main()
