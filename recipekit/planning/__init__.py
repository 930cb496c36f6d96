"""``recipes.run RECIPE --plan``: examples, tokens, steps, time, memory, disk and cost of a run, before it runs.

``request`` takes the flags out of the command line, ``workload`` counts the data and the steps,
``measured`` finds the project's measured rate and memory in ``bench/results``, ``footprint`` sizes
the checkpoints and reads the visible GPU, and ``report`` prints the plan.
"""

from recipekit.planning.report import run_plan
from recipekit.planning.request import PlanRequest, take_plan_flags

__all__ = ["PlanRequest", "run_plan", "take_plan_flags"]
