"""What a run's first seconds are spent on: which programs XLA compiles while the graph is built, and what
importing EnvPool imports. Each check runs in a fresh process, so that nothing an earlier test compiled or imported
hides a cost."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Builds each config's graph as a run does (prepare, build_graph, the precompile threads, the evaluator's policy)
# and prints the names of the programs compiled meanwhile.
COMPILED = textwrap.dedent("""
    import json, logging, re, sys
    import jax
    names = []

    class Names(logging.Handler):
        def emit(self, record):
            found = re.match(r"Compiling (?:jit\\()?([\\w<>]+)", record.getMessage())
            if found:
                names.append(found.group(1))

    logging.getLogger("jax").addHandler(Names())
    jax.config.update("jax_log_compiles", True)
    from jaxrl_dist.config import load_config
    from jaxrl_dist.roles.graph import build_graph, prepare
    out = {}
    for config in sys.argv[1:]:
        cfg = load_config(config, ["roles.compile_cache=null"])
        names.clear()
        g = build_graph(cfg, setup=prepare(cfg))
        for thread in g.precompiling:
            thread.join()
        g.evaluator.warmup(g.algo.actor_params(g.learner.state), cfg.eval.episodes)
        out[config] = list(names)
        g.close()
    print(json.dumps(out))
""")


def test_building_a_graph_compiles_only_the_runs_programs() -> None:
    """Host-side constants (the learner's warm-up zeros, the algorithms' bounds, the PRNG keys) cost no program of
    their own: a program each took about 0.1 s of a CPU start, over a second in all for PPO before its update could
    compile. What is left: the start keys, the initial state, the policy, the learner's fused call, the evaluation
    policy."""
    configs = ["configs/ppo_cartpole.yaml", "configs/dqn_cartpole.yaml", "configs/sac_pendulum.yaml"]
    proc = subprocess.run([sys.executable, "-c", COMPILED, *configs], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    compiled = json.loads(proc.stdout.strip().splitlines()[-1])
    for config in configs:
        names = list(compiled[config])
        for run_program in ("keys", "init", "act", "plain"):  # "plain": the learner's fused call (no priorities)
            names.remove(run_program)
        assert names in (["eval_act"], ["<lambda>"]), (config, compiled)  # the evaluation policy, and nothing else


def test_run_once_programs_compile_to_the_same_values() -> None:
    """The initial states compiled with `run_once_options` (on CPU: XLA's lowest optimisation and its older fusion
    emitters, faster to compile) equal those of XLA's default compilation, for an MLP, a Nature CNN and a
    squashed-Gaussian actor-critic; the options exist in this jaxlib (a missing one fails the compile)."""
    import jax
    import numpy as np

    from jaxrl_dist.algos import make_algorithm
    from jaxrl_dist.config import load_config
    from jaxrl_dist.roles.graph import prepare, run_once_options

    assert run_once_options(), "the test machine's backend is a CPU"
    for config in ("configs/dqn_cartpole.yaml", "configs/ddqn_pong.yaml", "configs/sac_pendulum.yaml"):
        cfg = load_config(config, [])
        setup = prepare(cfg)
        algo = make_algorithm(setup.spec, cfg, plan=setup.plan)
        key = np.array([0, 7], np.uint32)
        fast = jax.jit(algo.init, compiler_options=run_once_options())(key)
        default = jax.jit(algo.init)(key)
        for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(default), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7, err_msg=config)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Game2048-v1"])
def test_envpool_is_imported_without_its_jumanji_renderers(env_id: str) -> None:
    """`import envpool` imports matplotlib for its Jumanji renderers (about 0.5 s of a start); the adapter defers
    that package until one of its tasks is made, with every task id still registered."""
    script = textwrap.dedent(f"""
        import json, sys
        from jaxrl_dist.envs.envpool_vec import import_envpool
        envpool = import_envpool()
        before = {{"matplotlib": "matplotlib" in sys.modules, "jumanji": "envpool.jumanji" in sys.modules,
                  "ids": len(envpool.list_all_envs()), "listed": "Game2048-v1" in envpool.list_all_envs()}}
        env = envpool.make("{env_id}", env_type="gymnasium", num_envs=2)  # a Jumanji task imports its package now
        obs, _ = env.reset()
        rows = len(obs["board"] if isinstance(obs, dict) else obs)
        print(json.dumps({{**before, "rows": rows, "jumanji_after": "envpool.jumanji" in sys.modules}}))
    """)
    plain = subprocess.run([sys.executable, "-c", "import envpool; print(len(envpool.list_all_envs()))"],
                           capture_output=True, text=True, timeout=120)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["ids"] == int(plain.stdout.strip()) and got["listed"]  # the same task ids as a plain import
    assert not got["matplotlib"] and not got["jumanji"]
    assert got["rows"] == 2
    assert got["jumanji_after"] == (env_id == "Game2048-v1")  # imported when one of its tasks is made


def test_orbax_is_imported_at_the_first_save(tmp_path: Path) -> None:
    """A run opens its checkpointer at the start but imports orbax (about 0.3 s) only when it first saves."""
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        from jaxrl_dist.roles import train  # what a run imports before it starts training
        from jaxrl_dist.io import Checkpointer
        ckpt = Checkpointer({str(tmp_path / "checkpoints")!r})
        before = "orbax.checkpoint" in sys.modules
        ckpt.save(1, {{"w": np.arange(3.0)}}, {{"env_steps": 1}})
        print(json.dumps({{"before": before, "after": "orbax.checkpoint" in sys.modules, "steps": ckpt.all_steps()}}))
        ckpt.close()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"before": False, "after": True, "steps": [1]}
