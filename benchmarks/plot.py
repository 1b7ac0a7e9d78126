"""Draw docs/benchmarks.png: req/s per server per endpoint (grouped bars, log scale).

    benchmarks/.venv-peers/bin/python benchmarks/plot.py DATA.json OUT.png

run.py writes DATA.json ({"title", "servers", "matrix": {endpoint: {server: req/s}}}) and
runs this script with the peers' interpreter, where matplotlib (a benchmark-only
dependency) is installed; the project's .venv never gets it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def draw(data: dict[str, object], out: Path) -> None:
    matrix: dict[str, dict[str, float]] = data["matrix"]  # type: ignore[assignment]
    servers = [s for s in data["servers"] if any(s in row for row in matrix.values())]  # type: ignore[union-attr]
    endpoints = list(matrix)
    width = 0.8 / max(len(servers), 1)
    figure, axes = plt.subplots(figsize=(max(8.0, 1.6 * len(endpoints)), 5.5), dpi=120)
    colors = plt.get_cmap("tab10").colors
    for index, server in enumerate(servers):
        xs = [e + (index - (len(servers) - 1) / 2) * width for e in range(len(endpoints))]
        ys = [matrix[endpoint].get(server, 0.0) for endpoint in endpoints]
        hatch = "//" if server == "in-process" else None
        color = "0.8" if server == "in-process" else colors[index % len(colors)]
        axes.bar(xs, ys, width, label=server, color=color, hatch=hatch, edgecolor="0.3", lw=0.3)
    axes.set_yscale("log")
    axes.set_xticks(range(len(endpoints)))
    axes.set_xticklabels([e.replace(" (", "\n(") for e in endpoints], fontsize=8)
    axes.set_ylabel("requests/s (median, log scale)")
    axes.set_title(str(data["title"]), fontsize=10)
    axes.grid(axis="y", which="both", alpha=0.3)
    axes.legend(fontsize=7, ncol=2, loc="upper right")
    figure.tight_layout()
    figure.savefig(out)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    draw(json.loads(Path(argv[0]).read_text()), Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
