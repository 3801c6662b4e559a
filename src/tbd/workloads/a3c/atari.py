"""An Atari game as A3C sees it: 4 stacked 84x84 grayscale screens, actions repeated `frameskip` times.

Exercised by `pytest -q tests/workloads/test_a3c.py`. Uses gymnasium's ALE environments (ale-py
ships the ROMs) and no opencv: the emulator renders grayscale itself and the resize to 84x84 is a
nearest-neighbour index into the 210x160 screen, which keeps the paddles and the ball (2-4 pixels
wide) visible. Imports gymnasium only when an environment is made, so importing this is cheap.
"""

from __future__ import annotations

import numpy as np

from tbd.workloads.a3c.spec import SCREEN, STACK

HEIGHT, WIDTH = 210, 160  # Atari 2600 screen
_ROWS = np.linspace(0, HEIGHT - 1, SCREEN).round().astype(np.intp)
_COLS = np.linspace(0, WIDTH - 1, SCREEN).round().astype(np.intp)


def downsample(screen: np.ndarray) -> np.ndarray:
    """(210, 160) uint8 grayscale -> (84, 84) uint8."""
    return screen[_ROWS[:, None], _COLS[None, :]]


class AtariGame:
    """One emulator. `reset()` and `step(a)` return the stacked observation (4, 84, 84) uint8."""

    def __init__(self, game: str, frameskip: int, seed: int):
        import ale_py
        import gymnasium as gym

        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner from every actor
        gym.register_envs(ale_py)
        # frameskip inside the emulator (the action is repeated, the last screen returned);
        # repeat_action_probability 0: deterministic actions as in the A3C paper.
        self.env = gym.make(f"ALE/{game}-v5", frameskip=frameskip, repeat_action_probability=0.0,
                            full_action_space=False, obs_type="grayscale")
        self.num_actions = int(self.env.action_space.n)
        self.frameskip = frameskip
        self.seed = seed
        self.stack = np.zeros((STACK, SCREEN, SCREEN), dtype=np.uint8)
        self.episode_return = 0.0
        self.episode_steps = 0
        # Frames the emulator played, over all episodes: from its per-episode counter, because
        # a seeded reset restarts its global one.
        self.frame_number = 0
        self._frames_before_episode = 0

    def reset(self) -> np.ndarray:
        # Seeded once: a reset with a seed reloads the game (110 ms against 5.5 ms on this
        # machine's CPU), which made every round with an episode end several times slower. The
        # emulator's generator, seeded by the first reset, keeps later episodes reproducible.
        screen, info = self.env.reset(seed=self.seed) if self.seed is not None else self.env.reset()
        self.seed = None
        self.stack[:] = downsample(screen)  # the first screen fills the whole stack
        self.episode_return, self.episode_steps = 0.0, 0
        self._frames_before_episode = self.frame_number
        return self.stack.copy()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, dict]:
        """Returns (observation, reward, episode ended, info); info has the finished episode's
        return under 'episode_return' when it ended."""
        screen, reward, terminated, truncated, info = self.env.step(action)
        self.stack[:-1] = self.stack[1:]
        self.stack[-1] = downsample(screen)
        self.episode_return += reward
        self.episode_steps += 1
        self.frame_number = self._frames_before_episode + int(info["episode_frame_number"])
        out = {"frame_number": self.frame_number}
        done = bool(terminated or truncated)
        if done:
            out["episode_return"] = self.episode_return
            out["episode_steps"] = self.episode_steps
        return self.stack.copy(), float(reward), done, out

    def close(self) -> None:
        self.env.close()
