"""The learning proof as one picture: loss curves of the three stages, held-out scores vs targets."""
from __future__ import annotations

import json
from pathlib import Path


def _curve(run: Path, key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    path = run / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get(key) is not None:
                steps.append(rec["step"])
                values.append(rec[key])
    return steps, values


def scores(report: dict) -> list[tuple[str, float, float | None]]:
    """(label, held-out value, chance or None) for the bar chart."""
    chance = report["chance"]
    rows = [(f"audio QA: {a}", v["accuracy"], chance.get(a)) for a, v in report["answers_from_audio"].items()]
    rows += [(f"caption: {a}", v["accuracy"], chance.get(a))
             for a, v in report["captions_of_music"].items() if a != "mean"]
    for src in ("image", "video"):
        r = report[f"music_from_{src}"]
        rows += [(f"{src}->music: {a}", v["accuracy"], chance.get(a)) for a, v in r.items()
                 if isinstance(v, dict) and "accuracy" in v]
    for src in ("caption", "image", "video"):
        b = report[f"music_from_{src}"]["bridge"]
        rows.append((f"bridge cos ({src})", b["cosine"], None))
        rows.append((f"bridge top-1 ({src})", b["retrieval_top1"], b["retrieval_chance"]))
    rows.append(("edit nearer edited", report["editing"]["nearer_edited_than_source"], 0.5))
    for name, m in report.get("music_rendered", {}).items():          # the music itself, heard
        acc, chance = m["caption_to_music"]["model"]["accuracy"], m["chance"]
        for a in ("instrument", "tempo"):
            rows.append((f"music heard, {name}: {a}", acc[a], chance[a]))
    return rows


def plot_report(report: dict, runs: list[Path], out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 6), gridspec_kw={"width_ratios": [1, 1.3]})
    for n, run in enumerate(runs):
        colour = f"C{n}"
        for key, style in (("ce_loss", "-"), ("bridge_loss", "--")):
            steps, values = _curve(run, key)
            if steps:
                ax1.plot(steps, values, style, color=colour, alpha=0.45, linewidth=0.8,
                         label=f"{run.name} {key}")
        for key, marker in (("eval_ce_loss", "o-"), ("eval_bridge_loss", "s--")):
            steps, values = _curve(run, key)
            if steps:
                ax1.plot(steps, values, marker, color=colour, markersize=4, linewidth=1.8,
                         label=f"{run.name} held-out {key[5:]}")
    ax1.set_yscale("log")
    ax1.set_xlabel("optimizer step")
    ax1.set_title("loss per stage (thin: training, markers: held-out)")
    ax1.legend(fontsize=7)
    ax1.grid(alpha=0.3)
    rows = scores(report)
    y = range(len(rows))
    ax2.barh(list(y), [r[1] for r in rows], color="tab:blue")
    for i, (_, _, chance) in enumerate(rows):
        if chance is not None:
            ax2.plot([chance, chance], [i - 0.4, i + 0.4], color="tab:red")
    ax2.set_yticks(list(y), [r[0] for r in rows], fontsize=7)
    ax2.invert_yaxis()
    ax2.set_xlim(0, 1)
    ax2.set_title("held-out scores (red: chance)")
    ax2.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
