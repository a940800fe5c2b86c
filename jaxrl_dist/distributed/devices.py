"""Which JAX devices the roles run on: the config's device names (`auto`, `auto:N`, `cpu:N`, `gpu:N`) resolved once,
with a one-line error that lists the devices present."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from jaxrl_dist.errors import ConfigError


class Devices(NamedTuple):
    """The devices of a run's roles.

    Attributes:
        actor: the actor devices; each runs `roles.actor.count` actor threads, which share one parameter copy.
        learner: the learner mesh's devices, in mesh order (every process's, in a `jax.distributed` run).
        evaluator: where the evaluator runs its policy.
        note: how `auto` placed them (for the topology printout), or "".
    """

    actor: list[jax.Device]
    learner: list[jax.Device]
    evaluator: jax.Device
    note: str = ""

    @classmethod
    def resolve(cls, cfg: Any, peers: Any = None) -> Devices:
        """The devices `cfg.roles` names (see `resolve`)."""
        return resolve(cfg, peers)


def count_of(value: Any) -> int | None:
    """How many devices a `roles.*.devices` value names: a count, one name, a list; None for `auto`."""
    if value == "auto":
        return None
    if isinstance(value, int):
        return value
    return 1 if isinstance(value, str) else len(value)


def resolve(cfg: Any, peers: Any = None) -> Devices:
    """The roles' devices from `roles.actor.devices`, `roles.learner.devices` and `roles.evaluator.device`.

    `auto` places the actors on the first device of the default platform and, on a box of several accelerators,
    the learner mesh on those after them (Cleanba's split): as many as split the learner's batch (`replay.batch_size`,
    or `env.num_envs` for on-policy segments) evenly. On CPU, `auto` is the first device for every role. A count N
    takes the first N actor devices, and N learner devices after the actors' where there are enough (else from the
    first). In a `jax.distributed` run (`peers`) the learner mesh holds the same local devices of every process.

    Raises:
        ConfigError: A device that is not present, or more devices than there are.
    """
    roles = cfg.roles
    local = jax.local_devices()
    platform = local[0].platform
    pool = [d for d in local if d.platform == platform]
    actors = _pick(roles.actor.devices, "roles.actor.devices", pool, after=[], auto=pool[:1])
    rest = [d for d in pool if d not in actors]
    note = ""
    if roles.learner.devices == "auto" and platform != "cpu" and rest:
        learner = rest[:_split_count(cfg, len(rest), peers)]
        note = (f"auto: actors on {device_name(actors[0])}, learner mesh on the {len(learner)} of {len(rest)} "
                f"{platform} devices after it that split the batch evenly")
    else:
        learner = _pick(roles.learner.devices, "roles.learner.devices", pool, after=actors, auto=actors[:1])
    evaluator = actors[0] if roles.evaluator.device == "auto" else resolve_device(roles.evaluator.device,
                                                                                   "roles.evaluator.device")
    return Devices(actors, learner if peers is None else peers.learner_devices(learner), evaluator, note)


def _pick(value: Any, key: str, pool: list[jax.Device], after: list[jax.Device], auto: list[jax.Device]
          ) -> list[jax.Device]:
    """The devices a `devices` value names: `auto` -> `auto`; N -> N of `pool` (after the devices `after` where
    there are enough); a name or a list of names -> those."""
    if value == "auto":
        return auto
    if isinstance(value, int):
        rest = [d for d in pool if d not in after]
        if value <= len(rest):
            return rest[:value]
        if value <= len(pool):
            return pool[:value]
        return resolve_devices(f"{pool[0].platform}:0", value, key)  # raises, listing the devices present
    names = [value] if isinstance(value, str) else list(value)
    devices = [resolve_device(name, key) for name in names]
    if len(set(devices)) != len(devices):
        raise ConfigError(f"config key '{key}': {names} names a device twice; allowed: distinct devices")
    return devices


def _split_count(cfg: Any, available: int, peers: Any) -> int:
    """The most devices, up to `available`, over which the learner's batch splits evenly (with every process's)."""
    from jaxrl_dist.algos import resolve_algorithm

    segments = resolve_algorithm(cfg.algo.name).data == "segments"
    unit = cfg.env.num_envs if segments else cfg.replay.batch_size // getattr(peers, "mesh_processes", 1)
    return max(n for n in range(1, available + 1) if unit % n == 0)


def resolve_device(value: str, key: str) -> jax.Device:
    """`auto`, `auto:N`, `cpu`, `cpu:N`, `gpu:N` (any platform name) -> a local JAX device, or a ConfigError listing
    them."""
    return resolve_devices(value, 1, key)[0]


def resolve_devices(value: str, count: int, key: str) -> list[jax.Device]:
    """The device `value` names and the `count - 1` after it on its platform, or a ConfigError listing them."""
    devices = jax.local_devices()
    names = ", ".join(f"{d.platform}:{i}" for i, d in enumerate(devices))
    if value == "auto":
        platform, first = devices[0].platform, 0
    else:
        platform, _, index = value.partition(":")
        if platform == "auto":  # auto:N, the N-th device of the default platform (GPU where there is one)
            platform = devices[0].platform
        try:
            first = int(index or 0)
        except ValueError:
            first = -1
    if platform != devices[0].platform:  # another backend than the default (cpu on a GPU box)
        try:
            devices = jax.local_devices(backend=platform)
        except RuntimeError:
            devices = []
        names += "".join(f", {d.platform}:{i}" for i, d in enumerate(devices))
    matching = [d for d in devices if d.platform == platform]
    if not 0 <= first < len(matching):
        fake = ("; on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N fakes N devices"
                if platform == "cpu" else "")
        raise ConfigError(f"config key '{key}': device {value!r} is not present; allowed: auto, auto:N, "
                          f"{names}{fake}")
    if first + count > len(matching):
        raise ConfigError(
            f"config key '{key}': {count} devices from {value!r} are not present ({len(matching)} {platform} devices "
            f"here: {names}); on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N fakes N devices"
        )
    return matching[first:first + count]


def device_name(device: jax.Device) -> str:
    """`platform:N`, the device's place among this process's devices of its platform (as configs name it)."""
    same = [d for d in jax.local_devices(backend=device.platform) if d.platform == device.platform]
    return f"{device.platform}:{same.index(device)}" if device in same else str(device)
