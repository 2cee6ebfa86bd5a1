"""Studies: a plan of runs (growth.study.plan) handed to a registered executor (``study.executor``:
growth.study.local, growth.study.slurm). The study's summary (tables, figures) is analysis's, called
by the layer above both (launch.py)."""

from __future__ import annotations

from growth.kinds import EXECUTORS
from growth.study.plan import Job, StudyPlan, finished, plan_independent, plan_matched, predicted_rounds, study_identity

__all__ = ["Job", "Study", "StudyPlan", "execute", "finished", "plan_independent", "plan_matched", "predicted_rounds", "study_identity"]

Study = StudyPlan


def execute(plan: StudyPlan) -> list[Job]:
    """Run or submit the plan's jobs with the executor study.executor names."""
    return EXECUTORS.get(plan.st.executor)(plan).run()
