"""xdist's ``loadgroup`` scheduler, made safe for crashing workers.

Why: lmbench runs ``-n`` with ``--dist loadgroup`` so the cells sharing trained weights go to one worker. xdist's
scope schedulers re-queue a crashed worker's whole work unit *including the test that crashed it*, so a replacement
worker runs that test again (and crashes again, or the session hangs waiting for it: pytest-xdist 3.8, reproduced by
``tests/test_faults.py::test_a_crashed_xdist_worker_gives_its_test_an_error_record``). Here the crashed test counts as
done (xdist reports it once as a crash, lmbench writes its ``error`` record) and only the unit's other tests are
re-queued.
"""
from __future__ import annotations

from xdist.scheduler import LoadGroupScheduling


class CrashSafeLoadGroupScheduling(LoadGroupScheduling):
    def remove_node(self, node):  # type: ignore[override]
        workload = self.assigned_work.get(node, {})
        crashitem = next((nid for unit in workload.values() for nid, done in unit.items() if not done), None)
        if crashitem is None:
            return super().remove_node(node)  # shutdown: nothing pending
        self.assigned_work.pop(node)
        for unit in workload.values():
            unit.pop(crashitem, None)
        for scope, unit in workload.items():
            if any(not done for done in unit.values()):
                self.workqueue[scope] = unit  # the rest of the group runs on another worker
        for other in self.assigned_work:
            self._reschedule(other)
        return crashitem
