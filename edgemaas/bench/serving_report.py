"""The serving benchmark's outputs: serving.json, serving.md (the table, the goals met or missed) and serving.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgemaas import fsutil

OURS = "edgemaas"
GOAL_CONCURRENCY = 32
RPS_RATIO, RSS_RATIO, START_RATIO = 1.5, 0.5, 0.3
ROW_KEYS = ("server", "model", "concurrency", "requests", "errors", "rps", "p50_ms", "p90_ms", "p99_ms", "rss_mb",
            "start_s")


def _peers(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if not r["server"].startswith(OURS) and r["errors"] == 0 and r["rps"]]


def evaluate_goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per model, at concurrency 32: our rps vs the best peer's, p99, RSS vs the smallest peer's, start time."""
    goals = []
    rows = result["rows"]
    for model in result["models"]:
        at = [r for r in rows if r["model"] == model and r["concurrency"] == GOAL_CONCURRENCY]
        ours = next((r for r in at if r["server"] == OURS), None)
        peers = _peers(at)
        if ours is None or not peers or ours["errors"]:
            goals.append({"model": model, "goal": "all", "met": False,
                          "detail": "no error-free row for edgemaas or for any peer at concurrency 32"})
            continue
        best = max(peers, key=lambda r: r["rps"])
        lowest_p99 = min(peers, key=lambda r: r["p99_ms"])
        smallest = min(peers, key=lambda r: r["rss_mb"])
        fastest = min(peers, key=lambda r: r["start_s"])
        checks = [
            ("rps >= 1.5x best peer", ours["rps"] / best["rps"], ours["rps"] >= RPS_RATIO * best["rps"],
             f"{ours['rps']:.0f} vs {best['server']} {best['rps']:.0f}"),
            ("p99 <= best peer's", ours["p99_ms"] / lowest_p99["p99_ms"], ours["p99_ms"] <= lowest_p99["p99_ms"],
             f"{ours['p99_ms']:.1f} ms vs {lowest_p99['server']} {lowest_p99['p99_ms']:.1f} ms"),
            ("RSS <= 0.5x smallest peer", ours["rss_mb"] / smallest["rss_mb"],
             ours["rss_mb"] <= RSS_RATIO * smallest["rss_mb"],
             f"{ours['rss_mb']:.0f} MB vs {smallest['server']} {smallest['rss_mb']:.0f} MB"),
            ("first answer <= 0.3x fastest peer", ours["start_s"] / fastest["start_s"],
             ours["start_s"] <= START_RATIO * fastest["start_s"],
             f"{ours['start_s']:.2f} s vs {fastest['server']} {fastest['start_s']:.2f} s"),
        ]
        for goal, ratio, met, detail in checks:
            goals.append({"model": model, "goal": goal, "ratio": round(ratio, 2), "met": bool(met), "detail": detail})
    return goals


def markdown(result: dict[str, Any]) -> str:
    machine, settings = result["machine"], result["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
    lines = [
        f"Serving benchmark, {result['date']}: {machine['cpu']}, {machine['cores']} cores shared with other work "
        f"(load average {machine['load_average_before']} before, {machine['load_average_after']} after). "
        f"{settings['requests']} requests per row after {settings['warmup']} uncounted, one sample per request, "
        f"keep-alive HTTP on 127.0.0.1 from a load generator in its own process. Micro-batching: up to "
        f"{settings['max_batch']} samples, {settings['max_wait_ms']:g} ms (edgemaas: its default --max-batch, "
        f"{settings.get('our_max_batch', 'the same')}). Versions: {versions}.",
        "",
        "| model | server | conc. | req/s | p50 ms | p90 ms | p99 ms | peak RSS MB | first answer s | installed MB "
        "| errors |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['server']} | {r['concurrency']} | {r['rps']:.0f} | {_num(r['p50_ms'])} | "
                     f"{_num(r['p90_ms'])} | {_num(r['p99_ms'])} | {r['rss_mb']:.0f} | {_num(r['start_s'], 2)} | "
                     f"{result['installed_mb'].get(r['server'], 0):.0f} | {r['errors']} |")
    goals = result.get("goals") or []
    if goals:
        lines += ["", f"Goals at concurrency {GOAL_CONCURRENCY} (edgemaas = our server with micro-batching on; "
                      "peers: every error-free peer row, batching on or off):", "",
                  "| model | goal | ratio | met | measured |", "|---|---|--:|---|---|"]
        for g in goals:
            lines.append(f"| {g['model']} | {g['goal']} | {g.get('ratio', '-')} | {'yes' if g['met'] else 'NO'} | "
                         f"{g['detail']} |")
    return "\n".join(lines) + "\n"


def _num(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = result["models"]
    servers = list(dict.fromkeys(r["server"] for r in result["rows"]))
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        for server in servers:
            points = sorted((r["concurrency"], r["rps"]) for r in result["rows"]
                            if r["model"] == model and r["server"] == server)
            if points:
                ax.plot(*zip(*points), marker="o", label=server, linewidth=2.5 if server == OURS else 1)
        ax.set_title(model)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency")
    axes[0][0].set_ylabel("requests/s")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_serving(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """serving.json, serving.md and serving.png in `out_dir`, written together."""
    result["goals"] = evaluate_goals(result)
    text = markdown(result)
    targets = {out_dir / "serving.md": lambda tmp: tmp.write_text(text),
               out_dir / "serving.png": lambda tmp: plot(result, tmp),
               out_dir / "serving.json": lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n")}
    return fsutil.atomic_write_many(targets)
