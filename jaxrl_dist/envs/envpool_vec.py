"""EnvPool behind the `VecEnv` interface, with as little Python per `recv`/`send` as possible.

Hot path. Actors call recv/send 10k-100k times a second, so this adapter talks to EnvPool's C++ binding
(`_recv`/`_send`/`_reset`, the same calls EnvPool's own Python wrapper makes) with state indices and dtypes
resolved once, instead of going through the wrapper's per-call dict building and tree unflattening.

Facts about EnvPool (1.2.x) this relies on, each checked in tests/test_envs.py, tests/test_atari_lives.py or noted
here:
  * `_recv` returns freshly allocated arrays each call (owned through a capsule, never reused while referenced), so
    batches are handed out without copying.
  * `_send` does NOT copy actions: worker threads read the action array later, when they step the env. The adapter
    therefore sends a private copy and keeps it referenced until every env in that send has been sent again
    (so was received, hence stepped, in between).
  * EnvPool sets `trunc` only together with `done`, and some tasks (e.g. Catch-v0, highway-v0) ignore
    `max_episode_steps` altogether. The adapter derives truncation from `elapsed_step >= limit` and, where EnvPool did
    not end the episode, resets that env itself on the next send.
  * A terminal state on the step of EnvPool's own limit comes as done and trunc together, indistinguishable from a
    plain time limit. So EnvPool's limit is set one step beyond the adapter's, which truncates and resets by itself
    (as above) and reads EnvPool's `done` at its limit as a termination. Not with `episodic_life`, where a reset is
    not a restart (see below); Atari's info tells those rows apart instead, other such tasks (ViZDoom) keep the
    ambiguity on that one step.
  * After a done row, an env's next row is its reset row, whatever the task: that is what `first` is derived from.
    `elapsed_step == 0` is not: with `episodic_life` (Atari, ViZDoom) a lost life ends the episode (done) and the
    next row starts a new life, but `elapsed_step` only restarts with a new game.
  * Atari (tasks with `info:lives`, `info:reward`, `info:terminated`; checked on Breakout-v5 with episodic_life):
      - a lost life: done, not trunc, `info:terminated` 0 (game over is 1), `info:lives` one lower;
      - the next row (new life): `elapsed_step` unchanged, reward and `info:reward` 0, the same lives, and the frame
        stack continued by one frame (the old three and the frame after the no-ops / FIRE of the new life); the
        action sent for it is ignored, as for every reset row;
      - after a game over or EnvPool's time limit: `elapsed_step` 0, full lives, a stack of one repeated frame;
      - a life lost on the step of EnvPool's limit: done and trunc, lives one lower, the next row a new game;
      - `reward` is clipped with `reward_clip`; `info:reward` is the game's own.
    From these the adapter reports whole games: `score` is `info:reward`, `game_over` is `info:terminated` or the
    time limit, and a done-and-trunc row is terminated where the game ended or (with `episodic_life`) a life was lost
    on it, which takes each env's lives of its previous row.
  * In sync mode (batch_size == num_envs) results land in slots by position within one `_send`/`_reset` call, so a
    forced reset and a step in the same round would overwrite each other; forced resets are then collected first.
    For the same reason a sync-mode caller must send all num_envs actions in one `send` (as EnvPool itself requires).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import types
import warnings
from typing import Any

import numpy as np

from jaxrl_dist.envs.spec import EnvSpec, StepBatch, normalize_max_steps, obs_dtype_for, spec_from_spaces
from jaxrl_dist.errors import UserError

# EnvPool builds float64 Box bounds that gymnasium warns about casting to float32 whenever a space is built.
warnings.filterwarnings("ignore", message=r".*precision lowered by casting", category=UserWarning)

_STATE_KEYS = ("info:env_id", "elapsed_step", "done", "trunc", "reward", "obs")
_GAME_KEYS = ("info:reward", "info:terminated", "info:lives")  # Atari's: the real score, game over, lives
_ACTION_KEYS = ["env_id", "players.env_id", "action"]
# EnvPool's subpackages whose `__init__` is costly and which `import envpool` only needs for their task ids: the
# Jumanji one imports matplotlib for its renderers (about half a second of every run's start).
DEFERRED_SUBPACKAGES = ("jumanji",)


def import_envpool() -> types.ModuleType:
    """`import envpool`, without running the `__init__` of `DEFERRED_SUBPACKAGES` on the way.

    `import envpool` imports every family's `registration` module (the task ids, cheap), and with each its package's
    `__init__`, which loads the family's envs. For the families in `DEFERRED_SUBPACKAGES`, a bare package stands in
    for that `__init__` while EnvPool registers the task ids, and is dropped afterwards: a later `envpool.make` of
    one of their tasks imports the real package then, as EnvPool always does for the task it makes. If EnvPool's
    layout is not the one this expects, it is imported as it is.
    """
    if "envpool" in sys.modules:
        return sys.modules["envpool"]
    top = importlib.util.find_spec("envpool")  # locates the package without running it
    if top is None or not top.submodule_search_locations:
        import envpool  # raises the ImportError a missing EnvPool gives

        return envpool
    stand_ins = {}  # subpackage -> its bare stand-in
    for sub in DEFERRED_SUBPACKAGES:
        name, folder = f"envpool.{sub}", os.path.join(list(top.submodule_search_locations)[0], sub)
        if name in sys.modules or not os.path.isfile(os.path.join(folder, "registration.py")):
            continue
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [folder]
        stand_ins[sub] = sys.modules[name] = importlib.util.module_from_spec(spec)
    try:
        import envpool
    finally:
        parent = sys.modules.get("envpool")
        for sub, module in stand_ins.items():
            if sys.modules.get(f"envpool.{sub}") is module:
                del sys.modules[f"envpool.{sub}"]
            if getattr(parent, sub, None) is module:
                delattr(parent, sub)
    return envpool


class EnvPoolVecEnv:
    """A `VecEnv` over `envpool.make(..., env_type="gymnasium")`.

    `recv(timeout)` ignores `timeout`: EnvPool's receive blocks inside C++ and cannot be interrupted from Python.
    A stuck EnvPool task is not expected (its workers step envs independently of the caller), so callers that need
    a bound must enforce it around the actor thread. Not thread-safe: one actor thread calls recv and send.

    Args:
        task_id: an id from `envpool.list_all_envs()`, e.g. "CartPole-v1", "Pong-v5", "HalfCheetah-v4".
        num_envs: number of envs.
        batch_size: envs per recv; < num_envs runs EnvPool asynchronously.
        num_threads: EnvPool worker threads; 0 means min(os.cpu_count(), num_envs).
        seed: env i is seeded with seed + i (EnvPool's convention).
        max_episode_steps: time limit; 0 keeps the task's default.
        kwargs: extra `envpool.make` keyword arguments (e.g. `episodic_life`, `reward_clip` for Atari).
    """

    def __init__(
        self,
        task_id: str,
        *,
        num_envs: int,
        batch_size: int,
        num_threads: int = 0,
        seed: int = 0,
        max_episode_steps: int = 0,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        envpool = import_envpool()  # Imported here: a custom-env user need not have EnvPool working.
        kwargs = dict(kwargs or {})
        threads = num_threads or min(os.cpu_count() or 1, num_envs)
        try:
            config = envpool.make_spec(task_id, **kwargs).config
            limit = max_episode_steps or normalize_max_steps(int(config.max_episode_steps))
            self._episodic_life = bool(getattr(config, "episodic_life", False))
            if limit:  # one step beyond ours, so that EnvPool's done at our limit is a termination (module doc)
                kwargs["max_episode_steps"] = limit if self._episodic_life else limit + 1
            env = envpool.make(
                task_id, env_type="gymnasium", num_envs=num_envs, batch_size=batch_size, num_threads=threads,
                seed=seed, **kwargs,
            )  # fmt: skip
        except TypeError as e:
            if "unexpected keyword" not in str(e):
                raise
            raise UserError(f"env kwargs {sorted(kwargs)} for envpool task '{task_id}' not accepted: {e}") from e
        if int(env.config.get("max_num_players", 1)) != 1:
            raise UserError(f"envpool task '{task_id}' is multi-player; allowed: single-player tasks")
        self._env = env
        self.num_envs = num_envs
        self.batch_size = batch_size
        obs_space = getattr(env, "single_observation_space", env.observation_space)
        act_space = getattr(env, "single_action_space", env.action_space)
        self.spec: EnvSpec = spec_from_spaces(obs_space, act_space, limit, name=task_id)
        self._limit = np.int32(limit)  # a numpy scalar compares with the int32 elapsed_step without conversion
        self._bind_fast_path(task_id)
        self._sync = batch_size == num_envs
        # Arrays of recent sends, kept alive while EnvPool may still read them, and each env's latest send number.
        self._held: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._last_send = np.zeros(num_envs, np.int64)
        self._seq = 0
        self._prune_at = 64
        # Envs whose episode the adapter ended (time limit EnvPool ignored): reset them on their next send.
        self._force_reset = np.zeros(num_envs, bool)
        self._any_forced = False
        self._stash: list[np.ndarray] | None = None
        self._stash_only = False
        self._ended = np.ones(num_envs, bool)  # each env's latest row ended its episode: its next row is a reset
        self._lives = np.zeros(num_envs, np.int32)  # Atari: each env's lives in its latest row

    def _bind_fast_path(self, task_id: str) -> None:
        """Resolves state indices and dtypes once; fails loudly if EnvPool's binding changed shape."""
        env = self._env
        keys = list(env._state_keys)
        missing = [k for k in _STATE_KEYS if k not in keys]
        if missing or list(env._spec._action_keys) != _ACTION_KEYS:
            raise RuntimeError(
                f"envpool task '{task_id}': unexpected binding (state keys missing {missing}, action keys "
                f"{env._spec._action_keys}); this adapter is written for envpool 1.2.x"
            )
        (self._i_id, self._i_elapsed, self._i_done, self._i_trunc, self._i_reward, self._i_obs) = (
            keys.index(k) for k in _STATE_KEYS
        )
        # Atari's info (module doc); other tasks report `reward` as their score and every episode end as game over.
        self._game = all(k in keys for k in _GAME_KEYS)
        self._i_score, self._i_over, self._i_lives = (keys.index(k) if self._game else -1 for k in _GAME_KEYS)
        raw_obs_dtype = np.dtype(env._spec._state_spec[self._i_obs][0])
        self._obs_cast = None if obs_dtype_for(raw_obs_dtype) == raw_obs_dtype else obs_dtype_for(raw_obs_dtype)
        # EnvPool wants its own action dtype (float64 for MuJoCo, int32 for discrete); callers pass float32 / int.
        self._action_dtype = np.dtype(env._spec._action_spec[-1][0])
        self._recv_raw = env._recv
        self._send_raw = env._send
        self._reset_raw = env._reset

    def reset(self) -> None:
        """Resets every env; the next num_envs / batch_size batches carry first=True.

        Call it before the first recv, not while sends are in flight (EnvPool would return their results too).
        """
        self._ended[:] = True
        self._force_reset[:] = False
        self._any_forced = False
        self._stash = None
        self._env.async_reset()

    def recv(self, timeout: float = 60.0) -> StepBatch:
        """Returns the next batch of batch_size envs. Blocks in C++; `timeout` is not enforced (see class doc)."""
        if self._stash is None:
            s = self._recv_raw()
        elif self._stash_only:
            s, self._stash = self._stash, None
        else:
            s = [np.concatenate(pair) for pair in zip(self._stash, self._recv_raw())]
            self._stash = None
        ids = s[self._i_id]
        elapsed = s[self._i_elapsed]
        done = s[self._i_done]
        trunc = s[self._i_trunc]
        reward = s[self._i_reward]
        terminated = done > trunc  # done & ~trunc on bools, in one ufunc
        if self._game:
            score, over, terminated = self._game_rows(s, ids, trunc, terminated)
        else:
            score, over = reward, None
        if self._limit:
            at_limit = elapsed >= self._limit
            trunc = trunc | at_limit
            np.greater(trunc, terminated, out=trunc)  # never truncated together with terminated
            forced = trunc > done
            if np.count_nonzero(forced):  # EnvPool did not end these episodes: reset the envs at their next send.
                self._force_reset[ids[forced]] = True
                self._any_forced = True
        ended = terminated | trunc
        first = self._ended.take(ids)  # take / put: the fancy-index forms cost twice as much
        self._ended.put(ids, ended)
        if over is None:
            game_over = ended
        else:
            game_over = over | at_limit if self._limit else over
        obs = s[self._i_obs]
        if self._obs_cast is not None:
            obs = obs.astype(self._obs_cast)
        return StepBatch(ids, obs, reward, terminated, trunc, first, score, game_over)

    def _game_rows(self, s: list[np.ndarray], ids: np.ndarray, trunc: np.ndarray, terminated: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Atari rows: (score, game over, terminated), where a row that is both done and trunc (EnvPool's limit) is
        terminated if the game ended or, with `episodic_life`, a life was lost on it."""
        over = s[self._i_over].astype(bool)
        hidden = trunc & over
        if self._episodic_life:
            lives = s[self._i_lives]
            hidden |= trunc & (lives < self._lives.take(ids))
            self._lives.put(ids, lives)
        return s[self._i_score], over, terminated | hidden

    def send(self, actions: np.ndarray, env_ids: np.ndarray) -> None:
        """Steps the envs `env_ids` with `actions` ([B] int or [B, *action_shape] float32); returns at once."""
        # A private copy in EnvPool's dtype: EnvPool reads it from its worker threads after this call returns.
        acts = np.array(actions, dtype=self._action_dtype)
        ids = np.array(env_ids, dtype=np.int32)
        if self._any_forced:
            ids, acts = self._reset_forced(ids, acts)
            if ids.size == 0:
                return
        self._seq += 1
        self._last_send.put(ids, self._seq)  # = _last_send[ids] = seq, at half the cost
        self._held[self._seq] = (ids, acts)
        if len(self._held) > self._prune_at:
            self._prune_held()
        self._send_raw([ids, ids, acts])

    def _reset_forced(self, ids: np.ndarray, acts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Resets the envs among `ids` whose episode the adapter ended; returns the rest to step."""
        mask = self._force_reset[ids]
        if not mask.any():
            return ids, acts
        forced = ids[mask]
        self._force_reset[forced] = False
        self._any_forced = bool(self._force_reset.any())
        self._reset_raw(forced)
        keep = ~mask
        if self._sync:  # Collect the reset results now, before a _send reuses their slots (see module doc).
            self._stash = self._recv_raw()
            self._stash_only = not keep.any()
        return ids[keep], acts[keep]

    def _prune_held(self) -> None:
        """Drops the arrays of sends all of whose envs have been sent again since.

        An env is only sent again after recv returned it, i.e. after EnvPool read its action; so a send that is no
        env's latest is safe to drop. Checking this here, every so many sends, keeps the per-call cost to one
        scatter in `send` and none in `recv`.
        """
        live = set(np.unique(self._last_send).tolist())
        for seq in [s for s in self._held if s not in live]:
            del self._held[seq]
        self._prune_at = 2 * len(self._held) + 64

    def close(self) -> None:
        """Releases EnvPool's threads and envs."""
        self._env.close()
