"""One learner call of DQN on a fixed global batch, in one process or as one of N `jax.distributed` processes that
each feed their share of the batch; process 0 writes the resulting learner state to OUT (.npz).

`python tests/multiprocess_update.py OUT [COORDINATOR N PROCESS_ID]`, run by tests/test_processes.py;
`mpirun -n N python tests/multiprocess_update.py OUT.npz groups`: the processes are N MPI groups with `sync: grads`
(each feeds its share of the batch to its own learner devices); group g > 0 writes OUT.g.npz. Run by
tests/test_groups.py. The learner uses every local device (several with fake CPU devices).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

K, BATCH = 2, 64


def main(out: str, coordinator: str | None = None, n: int = 1, pid: int = 0) -> None:
    from jaxrl_dist.distributed.groups import Group, GroupMean
    from jaxrl_dist.distributed.processes import initialize

    peers: Any = None
    if coordinator == "groups":
        from mpi4py import MPI

        n = MPI.COMM_WORLD.Get_size()
        peers = Group(n, 60.0)
        pid = peers.rank
    elif n > 1:
        peers = initialize(coordinator, n, pid, False, 60.0)
    import jax

    from jaxrl_dist.algos import Transition, make_algorithm
    from jaxrl_dist.config import load_config
    from jaxrl_dist.distributed import LearnerMesh, fused_update
    from jaxrl_dist.roles.graph import prepare

    cfg = load_config("configs/dqn_cartpole.yaml", [f"replay.batch_size={BATCH}",
                                                    f"roles.learner.devices={jax.local_device_count()}"])
    setup = prepare(cfg, peers)
    spec = setup.spec
    placement = LearnerMesh.over(setup.devices.learner)
    algo = make_algorithm(spec, cfg, GroupMean(peers, placement.size) if isinstance(peers, Group)
                          else placement.grad_reduce)
    state = placement.put_replicated(jax.jit(algo.init)(jax.random.PRNGKey(0)))
    rng = np.random.default_rng(7)  # the same global batch in every process
    shape = (K, BATCH)
    batch = Transition(rng.normal(size=(*shape, 4)).astype(np.float32), rng.integers(0, 2, shape).astype(np.int32),
                       rng.normal(size=shape).astype(np.float32), np.full(shape, 0.99, np.float32),
                       rng.normal(size=(*shape, 4)).astype(np.float32))
    share = BATCH // n
    mine = jax.tree.map(lambda x: x[:, pid * share:(pid + 1) * share], batch)
    state, _ = fused_update(algo.update, placement)(state, placement.put_batches(mine))
    leaves = jax.tree.leaves(jax.device_get(placement.local(state)))
    if pid == 0:
        np.savez(out, *[np.asarray(x) for x in leaves])
    elif isinstance(peers, Group):  # every group's state, to check that they are the same
        np.savez(f"{out[:-len('.npz')]}.{pid}.npz", *[np.asarray(x) for x in leaves])


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[1:] == ["groups"]:
        main(a[0], "groups")
    else:
        main(a[0], *(a[1], int(a[2]), int(a[3])) if len(a) > 1 else ())  # type: ignore[arg-type]
