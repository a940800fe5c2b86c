"""`train --print-topology`: the resolved data-flow graph of a config, without building or running it."""

from __future__ import annotations

from jaxrl_dist.config import Config, plan
from jaxrl_dist.distributed.devices import Devices
from jaxrl_dist.distributed.devices import device_name as _name


def describe(cfg: Config) -> str:
    """The roles, their devices and threads, the queues between them and the batch each device gets.

    Raises:
        ConfigError: A device that is not present (the same check as at the start of a run).
    """
    devices = Devices.resolve(cfg)
    sizes = plan(cfg, devices=devices)
    serial = cfg.roles.mode == "serial"
    actors = sizes.actors
    actor_dev = ", ".join(_name(d) for d in devices.actor)
    if not serial and (cfg.roles.actor.count > 1 or len(devices.actor) > 1):
        actor_dev += f" ({cfg.roles.actor.count} per device, sharing its parameter copy)"
    learner_devs, eval_dev = devices.learner, _name(devices.evaluator)
    k, batch, shards = sizes.updates_per_call, cfg.replay.batch_size, len(learner_devs)
    where = "the driver's thread" if serial else "threads"
    mesh = f", mesh data={shards} (jit + shard_map, gradients pmean-reduced)" if shards > 1 else ""
    groups = cfg.roles.groups
    procs = "1 process" if groups.count == 1 else f"{groups.count} processes (MPI ranks), one group each"
    lines = [
        f"topology: {cfg.roles.mode} mode, {procs} ({'one deterministic thread' if serial else 'role threads'})",
        f"  actors     {actors} on {where}, inference on {actor_dev}; {cfg.env.num_envs} x {cfg.env.id} each, "
        f"{sizes.env_batch} per recv, {sizes.env_threads} EnvPool threads",
        f"  replay     host memory, {actors} lock-free partition(s) of {sizes.capacity_per_actor} transitions "
        f"(one writer each), n-step {sizes.n_step}"
        + (f", prioritized (alpha {cfg.replay.alpha:g}, beta {cfg.replay.beta_start:g}->{cfg.replay.beta_end:g})"
           if cfg.replay.prioritized else "")
        + (", frames stored once" if cfg.replay.frame_dedup else ""),
        f"  sampler    {'inline' if serial else '1 thread'}: [K={k}, B={batch}] per learner call, device_put to "
        f"the learner devices, {cfg.replay.prefetch} prepared ahead",
        f"  learner    {'inline' if serial else '1 thread'} on {', '.join(_name(d) for d in learner_devs)}{mesh}: "
        f"{batch // shards} transitions per device per update, {k} updates fused per call",
        f"  params     learner -> ParamStore (version stamped, published once computed, one copy per actor device) "
        f"-> actors (wait if > {cfg.train.max_staleness} updates stale) and evaluator",
        f"  ratio      {cfg.train.replay_ratio:g} updates per env step, held both ways (slack {sizes.ratio_slack} "
        f"env steps); learning starts after {cfg.train.learning_starts} env steps",
    ]
    if groups.count > 1:
        if groups.sync == "grads":
            how = ("mpi4jax allreduce" if shards == 1 else
                   f"pmean over the group's {shards} devices, then one host allreduce from its first device")
            sync = f"gradients averaged in every update ({how}): global batch {groups.count} x {batch}"
        else:
            how = "mpi4jax allreduce" if shards == 1 else (
                f"mpi4jax allreduce of the first device's copy, copied to the group's {shards} devices")
            if groups.overlap:
                how = "host allreduce in the background, applied one interval later"
            sync = f"learner states averaged every {groups.interval} updates ({how}), free in between"
        lines.append(f"  groups     {groups.count} x (actors + replay + learner), {sizes.env_step_budget} env steps "
                     f"each; {groups.sync}: {sync}; group 0 evaluates and writes; collectives time out after "
                     f"{groups.timeout_s:g} s")
    if sizes.data == "segments":  # on-policy: segments straight to the learner (roles/segments.py)
        seg, n = sizes.segment_length, cfg.env.num_envs
        on_policy = {
            "  replay": f"  segments   [N={n}, T+1={seg + 1}] per actor, device_put by the actor to the learner "
                        f"devices (split along envs), bounded queue; no replay, no sampler",
            "  learner": f"  learner    {'inline' if serial else '1 thread'} on "
                         f"{', '.join(_name(d) for d in learner_devs)}{mesh}: {n // shards} envs x {seg} steps per "
                         f"device, one update per segment",
            "  params": f"  params     learner -> ParamStore (version = segments trained, published once computed, one "
                        f"copy per actor device) -> actors, between segments (max_staleness "
                        f"{cfg.train.max_staleness} segments) and evaluator",
        }
        lines = [next((v for k, v in on_policy.items() if line.startswith(k)), line) for line in lines
                 if not line.startswith(("  sampler", "  ratio"))]
    if devices.note:
        lines.append(f"  placement  {devices.note}")
    if cfg.eval.interval:
        lines.append(f"  evaluator  {'inline' if serial else '1 thread'} on {eval_dev}: {sizes.eval_envs} envs "
                     f"(seeds {sizes.eval_seed}..), every {cfg.eval.interval} env steps")
    else:
        lines.append("  evaluator  off (eval.interval 0)")
    return "\n".join(lines)
