"""`sloguard.sim.cluster`: a virtual-time cluster of simulated pods driven by the real autoscaling core.

`ClusterSimulation(config, autoscaler).run()` → `ClusterResult`; the workload builders for the Azure
conversation trace and the batch backlog are in `workload`. Used by `sloguard bench autoscale`.
"""

from sloguard.sim.cluster.cluster import ClusterConfig, ClusterResult, ClusterSimulation, TimelinePoint
from sloguard.sim.cluster.replica import ClusterReplica, Phase

__all__ = ["ClusterConfig", "ClusterReplica", "ClusterResult", "ClusterSimulation", "Phase", "TimelinePoint"]
