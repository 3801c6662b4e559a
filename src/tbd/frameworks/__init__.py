"""Framework plugins: one package per framework (`tbd/frameworks/<name>/`), each with a `PLUGIN`
(`tbd.frameworks.base.FrameworkPlugin`) registered in `tbd.registry.FRAMEWORKS`.

`open_session(config)` is the one way a session is opened for a RunConfig: by runs, memory
profiles, Nsight Compute passes and the tests alike.
"""

from __future__ import annotations

from tbd import registry, topology


def open_session(config, world_size: int = 1):
    """The session of a validated RunConfig: its workload's implementation for its framework,
    built for this process's share of the global batch (`world_size` processes in all)."""
    spec = registry.get_spec(config.workload)
    impl = registry.load_implementation(config.workload, config.framework)
    return registry.framework(config.framework).open_session(config, spec, impl, topology.local_share(config.batch_size, world_size))
