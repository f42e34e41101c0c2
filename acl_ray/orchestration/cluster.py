"""Resources a killed sweep driver leaves reserved on a cluster that stays up, given back.

Ray Train reserves each trial's workers in a placement group created by its controller. When the
sweep's driver process is killed (SIGKILL, a lost head shell) while trials train, Ray ends the
driver's job and its actors, but on a cluster that stays up we measured one worker group's
placement group still ``CREATED`` minutes later (benchmarks/node_loss.py), holding its CPUs: a
resumed sweep on a tight cluster then waits for them forever. Before a sweep resumes, placement
groups that belong to a job that is no longer running (and are not detached) are removed, with
Ray's own state and placement-group APIs.
"""

from __future__ import annotations

import ray
from ray._raylet import PlacementGroupID
from ray.util.placement_group import PlacementGroup, remove_placement_group
from ray.util.state import list_jobs, list_placement_groups


def reclaim_orphaned_placement_groups() -> list[str]:
    """Remove every live, non-detached placement group whose creator job has ended; their ids.

    Asks the cluster this process is connected to (not ``auto``, which may pick another local one).
    """
    address = ray.get_runtime_context().gcs_address
    ended = {j.job_id for j in list_jobs(address=address, detail=False) if j.job_id and j.status != "RUNNING"}
    removed = []
    for pg in list_placement_groups(address=address, filters=[("state", "=", "CREATED")], detail=True):
        if pg.creator_job_id in ended and not pg.is_detached:
            remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(pg.placement_group_id)))
            removed.append(pg.placement_group_id)
    return removed
