"""The pygame window of the player: the scaled frame, a header, a help overlay, key events -> session.

Controls (the help overlay, `h`, lists them): Enter reset, `.` pause, `e` one step while paused,
←/→ world model / real environment, ↑/↓ steps before an automatic reset, `m` hands the controls to the
checkpoint's agent and back (random actions when it carries none; the header says who plays), Esc quit. Where the game's keymap itself uses the arrows (CoinRun), the arrow controls need Ctrl held.
"""

from __future__ import annotations

import os

import numpy as np

from common.play.keymaps import Keymap
from common.play.session import Session

CONTROLS = [
    ("Enter", "reset (next context)"),
    (".", "pause / resume"),
    ("e", "one step while paused"),
    ("<- / ->", "world model / real env"),
    ("up / down", "steps before auto reset"),
    ("m", "you / the checkpoint's agent (random if none)"),
    ("h", "this help"),
    ("Esc", "quit"),
]
KEY_COMMANDS = {
    "return": "reset",
    "enter": "reset",
    ".": "pause",
    "e": "step_once",
    "left": "view_model",
    "right": "view_env",
    "up": "more_steps",
    "down": "fewer_steps",
    "m": "toggle_policy",
    "h": "toggle_help",
    "escape": "quit",
}


def header_height(size: int) -> int:
    """Pixels above the frame for the four header lines."""
    return 4 * max(12, min(20, size // 24)) - 8


def has_display() -> bool:
    """A display pygame can open: an X11 / Wayland session, or an SDL driver chosen explicitly."""
    return (
        any(os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")) or os.name == "nt"
    )


class Window:
    """Owns the pygame display; `update()` handles pending events, steps the session once and draws."""

    def __init__(self, session: Session, title: str, size: int = 512, fps: int = 15) -> None:
        if not has_display():
            raise RuntimeError(
                "no display: use record=out.mp4 (headless) or run where a display is available"
            )
        import pygame

        self.pg = pygame
        pygame.display.init()  # no audio: pygame.init() would probe sound cards
        pygame.font.init()
        self.session = session
        self.title = title
        self.size = size
        height, width = session.world_model.frame_shape[:2]
        self.frame_height = round(size * height / width)  # the frame keeps its aspect ratio (16:9 Minecraft)
        self.fps = fps
        try:
            self.screen = pygame.display.set_mode((size, self.frame_height + header_height(size)))
        except pygame.error as e:
            raise RuntimeError(f"cannot open a window: {e} (use record=out.mp4 for headless play)") from None
        pygame.display.set_caption(f"worldplay - {title}")
        self.font = pygame.font.Font(None, max(12, min(20, size // 24)))  # the header fits small windows
        self.line = self.font.get_linesize() - 2
        self.clock = pygame.time.Clock()
        self.pressed: list[str] = []
        keymaps = [session.keymap] + ([session.env_keymap] if session.env_keymap else [])
        self.game_keys = set().union(*(k.keys for k in keymaps))

    # --- events ---------------------------------------------------------------------------------------
    def handle(self, event) -> None:
        pg = self.pg
        if event.type == pg.QUIT:
            self.session.command("quit")
        elif event.type == pg.KEYDOWN:
            name = pg.key.name(event.key)
            ctrl = bool(event.mod & pg.KMOD_CTRL) if hasattr(event, "mod") else False
            command = KEY_COMMANDS.get(name)
            if command and (ctrl or name not in self.game_keys):
                self.session.command(command)
            elif name not in self.pressed:
                self.pressed.append(name)
        elif event.type == pg.KEYUP:
            name = pg.key.name(event.key)
            if name in self.pressed:
                self.pressed.remove(name)

    def update(self) -> None:
        """One frame of the player: events, at most one step, drawing."""
        for event in self.pg.event.get():
            self.handle(event)
        if self.session.running:
            self.session.tick(list(self.pressed))
            self.draw()

    def run(self) -> None:
        try:
            while self.session.running:
                self.update()
                self.clock.tick(self.fps)
        finally:
            self.pg.quit()

    # --- drawing --------------------------------------------------------------------------------------
    def draw(self) -> None:
        pg, s = self.pg, self.session
        self.screen.fill((0, 0, 0))
        frame = np.ascontiguousarray(s.frame.transpose(1, 0, 2))  # pygame surfaces are (W, H, C)
        surface = pg.transform.scale(pg.surfarray.make_surface(frame), (self.size, self.frame_height))
        self.screen.blit(surface, (0, header_height(self.size)))
        for i, line in enumerate(self.header_lines()):
            self.text(line, (6, 4 + self.line * i))
        if s.show_help:
            self.overlay(self.help_lines(s.keymap, s.env_keymap))
        pg.display.flip()

    def header_lines(self) -> list[str]:
        """Title and view; step, the rate steps really come at (of the target) and the last model step's
        wall time; action, reward, done; a message (keys held, last command), the slow-step warning or the
        key hint."""
        st = self.session.status()
        view = "WORLD MODEL" if st.view == "model" else "REAL ENV"
        fps = "-" if st.fps is None else f"{st.fps:.1f}"
        flags = " PAUSED" if st.paused else ""
        line1 = f"{self.title} | {view}{flags} | {self.player(st)} | h: help"
        target = f"{st.target_fps or self.fps:g}"
        line2 = f"step {st.step}/{st.max_steps}  ep {st.episode}  {fps} fps of {target}  model {st.step_ms:.0f} ms"
        parts = [f"action {st.action}"]
        if st.reward is not None:
            parts.append(f"reward {st.reward:+.2f}  return {st.ret:+.2f}")
        if st.done is not None:
            parts.append(f"done {st.done}")
        line4 = st.message or st.warning or self.session.keymap.summary()
        if not line4 and self.session.latent:  # Genie: the latent action keys, always in sight
            keys = [k for k, _ in self.session.keymap.legend]
            line4 = (
                f"keys {keys[0]}..{keys[-1]}: latent actions 0..{len(keys) - 1} (h: legend, real-env keys)"
            )
        return [line1, line2, "  ".join(parts), line4]

    @staticmethod
    def player(st) -> str:
        """Who plays, and what `m` switches to."""
        if st.policy == "agent":
            return "AGENT (m: human)"
        if st.policy == "random":
            return "RANDOM policy: no agent in this checkpoint (m: human)"
        return f"human (m: {'agent' if st.agent else 'random'})"

    @staticmethod
    def help_lines(keymap: Keymap, env_keymap: Keymap | None) -> list[str]:
        lines = ["CONTROLS"] + [f"{k:>10}  {v}" for k, v in CONTROLS]
        game_keys = keymap.keys | (env_keymap.keys if env_keymap else set())
        taken = sorted(k for k in KEY_COMMANDS if k in game_keys)
        if taken:
            lines.append(f"  (the game uses {', '.join(taken)}: hold Ctrl for those controls)")
        lines += ["", "ACTIONS" + (" (world model: latent)" if env_keymap else "")]
        lines += [f"{k:>10}  {v}" for k, v in keymap.legend]
        if env_keymap is not None:
            lines += ["", "REAL ENV"] + [f"{k:>10}  {v}" for k, v in env_keymap.legend]
        return lines

    def text(self, line: str, pos: tuple[int, int]) -> None:
        if line:
            self.screen.blit(self.font.render(line, True, (255, 255, 255)), pos)

    def overlay(self, lines: list[str]) -> None:
        shade = self.pg.Surface(self.screen.get_size(), self.pg.SRCALPHA)
        shade.fill((0, 0, 0, 200))
        self.screen.blit(shade, (0, 0))
        for i, line in enumerate(lines):
            self.text(line, (12, 10 + self.line * i))
