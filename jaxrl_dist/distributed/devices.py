"""Which JAX devices the roles run on: the config's device names (`auto`, `auto:N`, `cpu:N`, `gpu:N`) resolved once,
with a one-line error that lists the devices present."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from jaxrl_dist.errors import ConfigError


class Devices(NamedTuple):
    """The devices of a run's roles.

    Attributes:
        actor: where actors run their policy.
        learner: the learner mesh's devices, in mesh order (every process's, in a `jax.distributed` run).
        evaluator: where the evaluator runs its policy.
    """

    actor: jax.Device
    learner: list[jax.Device]
    evaluator: jax.Device

    @classmethod
    def resolve(cls, cfg: Any, peers: Any = None) -> Devices:
        """The devices `cfg.roles` names; `peers` (a `jax.distributed` run) widens the learner mesh over every
        process. Raises `ConfigError` for a device that is not present."""
        roles = cfg.roles
        learner = resolve_devices(roles.learner.device, roles.learner.num_devices, "roles.learner.device")
        return cls(resolve_device(roles.actor.device, "roles.actor.device"),
                   learner if peers is None else peers.learner_devices(learner),
                   resolve_device(roles.evaluator.device, "roles.evaluator.device"))


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
    same = [d for d in jax.local_devices() if d.platform == device.platform]
    return f"{device.platform}:{same.index(device)}" if device in same else str(device)
