"""The same training and learner code on a multi-node Ray cluster (two nodes on loopback)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from agent_service.config import GaelpConfig
from agent_service.lab.parallel import train_parallel
from tests.agent.test_parallel_training import SMALL

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1"})
    c.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    c.wait_for_nodes()
    yield c.address
    ray.shutdown()
    c.shutdown()


def test_parallel_training_spreads_runners_over_the_cluster_nodes(cluster: str) -> None:
    cfg = dataclasses.replace(GaelpConfig(), hybrid=SMALL)
    run = train_parallel(cfg, runners=2, days=2, seed=100, budget_usd=4.0, persons=400, opportunities_per_day=1200,
                         ray_address=cluster)
    assert len(run["reports"]) == 2 and all(len(r.result.days) == 2 for r in run["reports"])
    assert run["nodes"] == 2 and len({r.node for r in run["reports"]}) == 2  # one runner on each node
    assert run["checkpoint"]["format"]
