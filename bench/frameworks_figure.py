"""The framework comparison as a figure: throughput per workload and framework, normalized to
PyTorch eager, one panel per batch (paper, large), from bench/frameworks_compare_gpu.py's results.

    PYTHONPATH=src python3 bench/frameworks_figure.py --in OUT --out docs/data/frameworks_h200.png
    PYTHONPATH=src python3 bench/frameworks_figure.py --in A.json --in B.json --out fig.png

In the style of tbd's report figures (src/tbd/report/plots.py): on a log-2 axis (a ratio and its
inverse are the same length), a bar per torch.compile and JAX from PyTorch eager's line at 1, up
when faster, down when slower, the ratio written on it, hatched where a run did not converge,
"n/a" where a framework has no run (the table says why).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import frameworks_table as tables  # noqa: E402

SERIES = (("compile", "torch.compile"), ("jax", "JAX"))  # bars; PyTorch eager is the line at 1


def figure(data: dict):
    from tbd.report.plots import _plt  # the report's matplotlib setup (Agg, grid, font size)

    rows = tables.rows(data)
    kinds = [k for k in tables.KINDS if any(r["kind"] == k for r in rows.values())]
    if not kinds:
        raise SystemExit("no measured runs in these results: nothing to plot")
    plt = _plt()
    from matplotlib.ticker import FuncFormatter

    every = tables.workloads(data)
    fig, axes = plt.subplots(len(kinds), 1, figsize=(max(6.5, 1.05 * len(every) + 3.5), 3.3 * len(kinds)), squeeze=False)
    width = 0.8 / len(SERIES)
    for ax, kind in zip(axes[:, 0], kinds):
        labels, in_legend, ratios = [], set(), [1.0]
        # Workloads with a run at this batch (a3c has no large batch: its panel leaves it out).
        names = [w for w in every if any(tables.measured(rows.get(f"{w}/{kind}/{v}")) for v, _ in (("eager", 0), *SERIES))]
        for x, w in enumerate(names):
            base = rows.get(f"{w}/{kind}/eager")
            batch = next((r["batch"] for v in ("eager", "compile", "jax") if (r := rows.get(f"{w}/{kind}/{v}")) and r.get("batch")), None)
            labels.append(f"{w}\n(batch {batch:,})" if batch else w)
            if not tables.measured(base):
                ax.text(x, 1.0, "no PyTorch\neager run", ha="center", va="bottom", fontsize=6, color="gray")
                continue
            for i, (variant, label) in enumerate(SERIES):
                r = rows.get(f"{w}/{kind}/{variant}")
                q = tables.ratio(r, base)
                pos = x + (i - (len(SERIES) - 1) / 2) * width
                if q is None:
                    ax.text(pos, 1.0, "n/a", ha="center", va="bottom", fontsize=6, rotation=90, color="gray")
                    continue
                converged = r["status"] == "ok" and (base or {}).get("status") == "ok"
                # From 1 (PyTorch eager) up or down: a slower framework's bar points down.
                ax.bar(pos, q - 1.0, width, bottom=1.0, color=f"C{i + 1}", label=None if label in in_legend else label,
                       hatch=None if converged else "//", edgecolor="white" if converged else "black", linewidth=0.5)
                in_legend.add(label)
                ratios.append(q)
                ax.text(pos, q * (1.04 if q >= 1 else 0.96), f"{q:.2f}", ha="center", va="bottom" if q >= 1 else "top", fontsize=6)
        ax.set_yscale("log", base=2)
        ax.set_ylim(min(ratios) / 1.6, max(ratios) * 1.6)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.axhline(1.0, color="black", lw=0.8, label="PyTorch eager (= 1)")
        ax.set_xticks(range(len(names)), labels, fontsize=7)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_ylabel("throughput / PyTorch eager's")
        ax.set_title(f"{kind} batch: throughput relative to PyTorch eager ({precisions(data, kind)})")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # outside: it must not cover a bar
        if any(r["status"] != "ok" for r in rows.values() if r["kind"] == kind and tables.measured(r)):
            ax.text(1.01, 0.02, "hatched: not\nconverged", transform=ax.transAxes, ha="left", va="bottom", fontsize=7)
    fig.text(0.01, 0.005, tables.environment(data), fontsize=6, color="gray")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    return fig


def precisions(data: dict, kind: str) -> str:
    found = sorted({(p.get("point") or {}).get("config", {}).get("precision") or "" for k, p in data["points"].items()
                    if k.split("/")[1] == kind and (p.get("point") or {}).get("config")} - {""})
    return ", ".join(found) or "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--in", dest="inputs", action="append", required=True, help="frameworks_compare.json or its folder (repeatable)")
    ap.add_argument("--out", required=True, help="PNG to write")
    args = ap.parse_args()
    fig = figure(tables.load(args.inputs))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=150)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
