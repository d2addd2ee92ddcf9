"""`edgemaas bench`: every way to serve a model, side by side in one run (cold start, warm latency, throughput,
memory, size), the goals evaluated from the same run's ratios, and the results as JSON, Markdown and PNG plots.

    result = run_bench(["cnn"], Workspace(Path(".")), report=print)
    write_results(result, Path("dist/bench"))
    print(readme_table(result))
"""

from edgemaas.bench.goals import evaluate_goals
from edgemaas.bench.report import load_results, markdown_report, readme_table, write_results
from edgemaas.bench.results import BenchResult, Goal, ServerResult, Stats
from edgemaas.bench.run import run_bench

__all__ = ["BenchResult", "Goal", "ServerResult", "Stats", "evaluate_goals", "load_results", "markdown_report",
           "readme_table", "run_bench", "write_results"]
