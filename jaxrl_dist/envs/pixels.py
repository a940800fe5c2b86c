"""Catch: a CPU-sized pixel game that takes the Atari path (uint8 frame stacks, lives) with a known optimal return.

`jaxrl_dist.envs.pixels:Catch` in a config (`env.id`). Balls fall one cell per step down an 11 x 11 grid, moving one
column sideways per step and bouncing off the side walls; a 3-cell paddle on the bottom row moves one cell per step
(actions: 0 stay, 1 left, 2 right). A ball that reaches the bottom row over the paddle is caught (reward +1); one
that does not costs a life (reward 0). A game drops `balls` balls and ends early when its `lives` are gone.

Frames are 44 x 44 uint8 (4-pixel cells; ball 255, paddle 128) and the observation is the stack of the last 4,
`[4, 44, 44]`, shifted by exactly one frame per step as EnvPool's Atari stacks are, so `replay.frame_dedup` stores
each frame once. A new game starts with its first frame repeated 4 times.

Why 44 x 44: the configs play it with the built-in Nature CNN (`network.torso: nature_cnn`: 8x8/4, 4x4/2 and 3x3/1
convolutions), whose windows tile 44 exactly (10, 4 and 2 positions). On 42 x 42 frames its second convolution
drops the bottom rows and right columns, the paddle's among them, and Double DQN learned nothing in 40k env steps.
36 x 36 is tiled too (8, 3 and 1 positions: 64 features after the convolutions), but a Double DQN run learned
nothing in 27k env steps there, where at 44 x 44 every run played perfectly by 7.5-20k (configs/ddqn_catch.yaml).

Known answer: every ball can be caught. A ball needs 10 steps to fall, the paddle at most 8 moves to get under it
(its centre stays in columns 1-9), and the second frame shows which way the ball moves, so a policy that reads two
frames catches all `balls` balls (tests/test_pixels.py plays one): the optimal return is `balls` (10 by default).
A single frame does not tell the direction, which is what the frame stack is for. A uniformly random policy
scores about 1.0 a game (0.35 a life).

Lives (`episodic_life`): a `BaseEnv` has no way to tell the vectorizer that a game goes on after a lost life (every
episode it reports is a whole game, `jaxrl_dist.envs.serial`), so there are two modes:

* `episodic_life=False` (default): an episode is a game, terminated when its balls or lives are used up; returns are
  game scores (0 to `balls`).
* `episodic_life=True`, as CleanRL trains Atari: a missed ball terminates the episode, and the reset that follows
  continues the same game in a new life: the stack goes on by one frame (the last three and the new ball's), as
  EnvPool's does after a lost life, so frames stored once point at the old frames. Every reported return is then
  the catches of one life: an agent that misses no ball scores `balls` (a whole game in one life) either way, but a
  game with misses is reported as several shorter episodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxrl_dist.envs.base import BaseEnv, Box, Discrete

GRID = 11  # cells per side
CELL = 4  # pixels per cell
SIZE = GRID * CELL  # 44
STACK = 4
BALL, PADDLE = 255, 128  # pixel values


class Catch(BaseEnv):
    """The game of the module doc.

    Args:
        balls: balls per game (its optimal return), >= 1.
        lives: misses that end a game, >= 1.
        episodic_life: a missed ball terminates the episode and the next reset continues the game (module doc).
    """

    action_space = Discrete(3)
    observation_space = Box(0, 255, shape=(STACK, SIZE, SIZE), dtype=np.uint8)

    def __init__(self, balls: int = 10, lives: int = 3, episodic_life: bool = False) -> None:
        if balls < 1 or lives < 1:
            raise ValueError(f"Catch(balls={balls}, lives={lives}): both must be >= 1")
        self.balls, self.lives, self.episodic_life = int(balls), int(lives), bool(episodic_life)
        # A game takes fewer than `balls` * GRID steps; the limit only guards against a bug.
        self.max_episode_steps = self.balls * GRID + GRID
        self._rng = np.random.default_rng(0)
        self._stack = np.zeros((STACK, SIZE, SIZE), np.uint8)
        self._x = self._y = self._dx = 0  # the ball's column, row and sideways step (+-1)
        self._paddle = GRID // 2  # the paddle's centre column, 1..GRID - 2
        self._dropped = self._missed = 0  # balls of this game that landed; of them, missed
        self._game_over = True

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        if self.episodic_life and not self._game_over:  # a new life of the same game: the stack goes on
            self._spawn()
            self._push(self._draw())
            return self._stack.copy()
        self._dropped = self._missed = 0
        self._game_over = False
        self._paddle = GRID // 2
        self._spawn()
        self._stack[:] = self._draw()
        return self._stack.copy()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool]:
        self._paddle = min(max(self._paddle + (0, -1, 1)[int(action)], 1), GRID - 2)
        if self._y == GRID - 1:  # the last ball landed on the previous step: the next one appears
            self._spawn()
        else:
            self._y += 1
            if not 0 <= self._x + self._dx < GRID:
                self._dx = -self._dx  # bounce off the wall
            self._x += self._dx
        reward, terminated = 0.0, False
        if self._y == GRID - 1:
            self._dropped += 1
            caught = abs(self._x - self._paddle) <= 1
            reward = float(caught)
            self._missed += not caught
            self._game_over = self._dropped >= self.balls or self._missed >= self.lives
            terminated = self._game_over or (self.episodic_life and not caught)
        self._push(self._draw())
        return self._stack.copy(), reward, terminated, False

    def _spawn(self) -> None:
        """A new ball in the top row, at a random column, moving left or right."""
        self._x, self._y = int(self._rng.integers(GRID)), 0
        self._dx = 1 if self._rng.integers(2) else -1

    def _push(self, frame: np.ndarray) -> None:
        self._stack[:-1] = self._stack[1:]
        self._stack[-1] = frame

    def _draw(self) -> np.ndarray:
        frame = np.zeros((SIZE, SIZE), np.uint8)
        row = (GRID - 1) * CELL
        frame[row + CELL // 2:row + CELL, (self._paddle - 1) * CELL:(self._paddle + 2) * CELL] = PADDLE
        frame[self._y * CELL:(self._y + 1) * CELL, self._x * CELL:(self._x + 1) * CELL] = BALL
        return frame
