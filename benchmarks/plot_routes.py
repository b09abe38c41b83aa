"""Plot a `load_routes.py` results file: wall time and peak RSS per route, per size, one panel pair per side.

    python benchmarks/plot_routes.py benchmarks/results-routes.md benchmarks/results-routes.png

Reads the markdown tables the benchmark writes (``| size | model | route | wall s | cpu s | peak RSS GB | ...``),
so the plot always shows exactly the committed figures. Needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import sys
from pathlib import Path


def parse(text: str) -> dict[str, dict[str, dict[str, tuple[float, float]]]]:
    """side title -> size -> route -> (wall s, peak RSS GB)."""
    out: dict[str, dict[str, dict[str, tuple[float, float]]]] = {}
    side = None
    for line in text.splitlines():
        if line.startswith("## "):
            side = line[3:].strip()
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if side and len(cells) == 10 and cells[0] not in ("size", "---") and cells[3].replace(".", "", 1).isdigit():
            size, _, route, wall, _, peak = cells[:6]
            out.setdefault(side, {}).setdefault(size, {})[route] = (float(wall), float(peak))
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(12, 4 * len(results)), squeeze=False)
    for row, (side, sizes) in enumerate(results.items()):
        routes = list(next(iter(sizes.values())))
        width = 0.8 / len(sizes)
        for col, (index, label) in enumerate(((0, "wall time, s (median of runs)"), (1, "peak RSS, GB"))):
            ax = axes[row][col]
            for i, (size, figures) in enumerate(sizes.items()):
                xs = [r + i * width for r in range(len(routes))]
                ax.bar(xs, [figures[r][index] for r in routes], width, label=size)
            ax.set_xticks([r + width * (len(sizes) - 1) / 2 for r in range(len(routes))], routes, rotation=20)
            ax.set_title(f"{side}: {label}", fontsize=9)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    plot(parse(source.read_text()), target)
    print(f"wrote {target}")
