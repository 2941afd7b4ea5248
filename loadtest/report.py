"""The human-readable side of a `python -m loadtest` run: one results dict in, a Markdown summary and PNG plots out.

`markdown` renders the summary (when, on what machine, which versions; one table row per scenario with
the median req/s of every server, fastingress's ratios to nginx and haproxy by its best rounds with the
ratio of medians in parentheses, p99s, req per CPU-second and errors; each scenario's extra facts; links
to the plots). `write_report` writes it as `<stem>.md` next to `<stem>-throughput.png` (req/s and req per
CPU-second) and `<stem>-latency.png` (p50/p90/p99).

The results come from loadtest/__main__.py (see loadtest/scenario.py for one scenario's shape); this module
reads them defensively: a missing server, metric or section renders as "-" (or is left out of a plot),
never as an exception; results from before the best-rounds estimate (no `best`) show the ratio of
medians alone. It measures nothing and starts nothing. Plots are drawn on a bare `matplotlib.figure.Figure`
(the Agg canvas, no pyplot, no GUI backend, no global state) and carry no timestamp, so the same results
give the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from loadtest.harness import BEST_ROUNDS

SUBJECT = "fastingress"
REFERENCES = ("nginx", "haproxy")  # the proxies fastingress is compared with, in table order
PERCENTILES = (("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99"))
LOG_SPREAD = 30.0  # a plot's y axis goes logarithmic when its largest bar exceeds its smallest by this factor
MISSING = "-"


# ---------------------------------------------------------------- reading the results defensively


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    """A finite float, or None for anything else (missing, None, a string, NaN, a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _scenarios(results: dict[str, Any]) -> list[dict[str, Any]]:
    scenarios = results.get("scenarios")
    return [s for s in scenarios if isinstance(s, dict)] if isinstance(scenarios, list) else []


def _name(scenario: dict[str, Any], index: int) -> str:
    name = scenario.get("name")
    return str(name) if name not in (None, "") else f"scenario {index + 1}"


def _medians(scenario: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(server): _dict(m) for server, m in _dict(scenario.get("median")).items()}


def _metric(scenario: dict[str, Any], server: str, key: str) -> float | None:
    return _number(_medians(scenario).get(server, {}).get(key))


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def _rps_ratio(scenario: dict[str, Any], other: str) -> float | None:
    """fastingress/other in req/s: the harness's own ratio if it gave one, else from the medians."""
    given = _number(_dict(scenario.get("ratios")).get(f"{SUBJECT}/{other}"))
    if given is not None:
        return given
    return _ratio(_metric(scenario, SUBJECT, "rps"), _metric(scenario, other, "rps"))


def _best_rps_ratio(scenario: dict[str, Any], other: str) -> float | None:
    """fastingress/other in req/s by the best rounds: the harness's `best_ratios`, else from `best`; None
    for results without them."""
    given = _number(_dict(scenario.get("best_ratios")).get(f"{SUBJECT}/{other}"))
    if given is not None:
        return given
    best = _dict(scenario.get("best"))
    return _ratio(_number(_dict(best.get(SUBJECT)).get("rps")), _number(_dict(best.get(other)).get("rps")))


def servers_of(results: dict[str, Any]) -> list[str]:
    """Every server with a median in some scenario: fastingress, nginx, haproxy first, then by first appearance."""
    seen: list[str] = []
    for scenario in _scenarios(results):
        for server in _medians(scenario):
            if server not in seen:
                seen.append(server)
    preferred = [s for s in (SUBJECT, *REFERENCES) if s in seen]
    return preferred + [s for s in seen if s not in preferred]


def machine_line(results: dict[str, Any]) -> str:
    """`Linux 6.1.0 x86_64, 2 CPUs`, from whatever of that the results carry."""
    machine = _dict(results.get("machine"))
    parts = [str(machine[k]) for k in ("sysname", "release", "machine") if machine.get(k) not in (None, "")]
    cpus = results.get("cpus")
    if cpus not in (None, ""):
        parts_text = " ".join(parts)
        cpu_text = f"{cpus} CPU" + ("" if cpus == 1 else "s")
        return f"{parts_text}, {cpu_text}" if parts_text else cpu_text
    return " ".join(parts) or "unknown machine"


# ---------------------------------------------------------------- formatting


def fmt_number(value: Any) -> str:
    """A number as a reader wants it: `26,439` req/s, `3.56` ms, `0.05` s; anything else as text, or "-"."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return MISSING
    if not isinstance(value, int | float):
        return str(value)
    if not math.isfinite(value):
        return MISSING
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.3g}"


def fmt_ratio(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}x"


def _rps(value: float | None) -> str:
    return MISSING if value is None else f"{value:,.0f}"


def _ms(value: float | None) -> str:
    if value is None:
        return MISSING
    return f"{value:.2f}" if abs(value) < 100 else f"{value:,.0f}"


def _short(value: float) -> str:
    """A bar label: `31.2k`, `5.65`, `245`."""
    if abs(value) >= 1e6:
        return f"{value / 1e6:.3g}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.3g}k"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _cell(text: str) -> str:
    """Table-safe: no pipes or line breaks inside a cell."""
    return " ".join(text.replace("|", "\\|").split()) or MISSING


def _code(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"


# ---------------------------------------------------------------- the Markdown summary


def _errors(scenario: dict[str, Any], servers: Iterable[str]) -> str:
    """`0` when every server measured had none, else who had how many (median per round)."""
    counts = {s: _metric(scenario, s, "errors") for s in servers}
    known = {s: c for s, c in counts.items() if c is not None}
    if not known:
        return MISSING
    nonzero = [f"{s} {fmt_number(c)}" for s, c in known.items() if c]
    return ", ".join(nonzero) if nonzero else "0"


def _p99_cell(scenario: dict[str, Any], server: str) -> str:
    p99 = _metric(scenario, server, "p99_ms")
    if p99 is None:
        return MISSING
    if server == "nginx":
        return _ms(p99)
    versus = None
    if server == SUBJECT:
        versus = _number(_dict(scenario.get("ratios")).get(f"p99 {SUBJECT}/nginx"))
    if versus is None:
        versus = _ratio(p99, _metric(scenario, "nginx", "p99_ms"))
    return _ms(p99) if versus is None else f"{_ms(p99)} ({fmt_ratio(versus)})"


def _ratio_cell(scenario: dict[str, Any], other: str) -> str:
    """`0.93x (0.91x)`: by the best rounds, the ratio of medians in parentheses; older results: medians alone."""
    best, median = _best_rps_ratio(scenario, other), _rps_ratio(scenario, other)
    return fmt_ratio(median) if best is None else f"{fmt_ratio(best)} ({fmt_ratio(median)})"


def _table(results: dict[str, Any]) -> list[str]:
    servers = servers_of(results)
    shown = [SUBJECT, *REFERENCES] + [s for s in servers if s not in (SUBJECT, *REFERENCES)]
    header = (["scenario"] + [f"{s} req/s" for s in shown]
              + [f"{SUBJECT}/{r}" for r in REFERENCES]
              + [f"p99 ms {s}" for s in shown]
              + [f"req/CPU-s {SUBJECT}/nginx", "errors"])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 2) + ["---"]) + "|"]
    for index, scenario in enumerate(_scenarios(results)):
        per_cpu = _ratio(_metric(scenario, SUBJECT, "rps_per_cpu_s"), _metric(scenario, "nginx", "rps_per_cpu_s"))
        row = ([_name(scenario, index)]
               + [_rps(_metric(scenario, s, "rps")) for s in shown]
               + [_ratio_cell(scenario, r) for r in REFERENCES]
               + [_p99_cell(scenario, s) for s in shown]
               + [fmt_ratio(per_cpu), _errors(scenario, _medians(scenario))])
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return lines


def _header(results: dict[str, Any]) -> list[str]:
    lines = [f"# {SUBJECT} benchmark", ""]
    lines.append(f"- date: {results.get('started') or MISSING}")
    lines.append(f"- machine: {machine_line(results)}")
    versions = _dict(results.get("versions"))
    if versions:
        lines.append("- versions: " + ", ".join(f"{k} {_code(str(v))}" for k, v in versions.items()))
    else:
        lines.append(f"- versions: {MISSING}")
    options = _dict(results.get("options"))
    if options:
        lines.append("- options: " + ", ".join(f"{k} {fmt_number(v)}" for k, v in options.items()))
    return lines


def _scenario_sections(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for index, scenario in enumerate(_scenarios(results)):
        lines += ["", f"### {_name(scenario, index)}", ""]
        description = scenario.get("description")
        if description:
            lines += [str(description), ""]
        extra = _dict(scenario.get("extra"))
        if extra:
            lines += [f"- {key}: {fmt_number(value)}" for key, value in extra.items()]
        else:
            lines.append("No extra facts.")
    return lines


def markdown(results: dict[str, Any], plot_names: list[str]) -> str:
    """The summary of one run; `plot_names` are image paths relative to the Markdown file (linked, in order)."""
    lines = _header(results)
    lines += ["", "## Summary", ""]
    if _scenarios(results):
        lines += _table(results)
        lines += ["", f"`{SUBJECT}/x`: ratio of req/s (above 1: {SUBJECT} serves more); best: mean of each "
                  f"server's {BEST_ROUNDS} fastest rounds; in parentheses: ratio of medians. Other columns: medians "
                  "over the rounds. p99 cells: milliseconds, and in parentheses the ratio to nginx's p99 "
                  f"(below 1: lower latency). `{MISSING}`: not measured in that scenario."]
    else:
        lines.append("No scenarios were run.")
    lines += ["", "## Scenarios"]
    lines += _scenario_sections(results) if _scenarios(results) else ["", "None."]
    if plot_names:
        lines += ["", "## Plots", ""]
        for name in plot_names:
            lines += [f"![{Path(name).stem}]({name})", ""]
        lines.pop()
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the plots


def _colour(servers: list[str]) -> dict[str, str]:
    palette = ["tab:blue", "tab:green", "tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:pink",
               "tab:olive", "tab:cyan", "tab:gray"]
    return {server: palette[i % len(palette)] for i, server in enumerate(servers)}


def _logarithmic(groups: Iterable[tuple[str, dict[str, float]]]) -> bool:
    values = [v for _, bars in groups for v in bars.values()]
    return bool(values) and max(values) / min(values) > LOG_SPREAD


def _grouped_bars(ax: Axes, groups: list[tuple[str, dict[str, float]]], servers: list[str],
                  colours: dict[str, str], ylabel: str, logarithmic: bool) -> None:
    """One group per scenario, one bar per server that has a value there (packed, no gaps for absent servers)."""
    if not groups:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_xticks([])
        ax.set_ylabel(ylabel)
        return
    widest = max(len(bars) for _, bars in groups)
    width = 0.8 / widest
    labelled: set[str] = set()
    for x, (_, bars) in enumerate(groups):
        present = [s for s in servers if s in bars]
        for j, server in enumerate(present):
            offset = (j - (len(present) - 1) / 2) * width
            label = server if server not in labelled else None
            labelled.add(server)
            drawn = ax.bar(x + offset, bars[server], width * 0.92, color=colours[server], label=label)
            ax.bar_label(drawn, [_short(bars[server])], fontsize=7, padding=1)
    if logarithmic:
        ax.set_yscale("log")
    ax.margins(y=0.1)  # room for the labels over the tallest bars
    ax.set_ylabel(ylabel + (" (log scale)" if logarithmic else ""))
    ax.set_xticks(range(len(groups)), [name for name, _ in groups])
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.set_axisbelow(True)


def _groups(results: dict[str, Any], servers: list[str], key: str) -> list[tuple[str, dict[str, float]]]:
    groups = []
    for index, scenario in enumerate(_scenarios(results)):
        bars: dict[str, float] = {}
        for server in servers:
            value = _metric(scenario, server, key)
            if value is not None and value > 0:
                bars[server] = value
        if bars:
            groups.append((_name(scenario, index), bars))
    return groups


def _legend(fig: Figure, axes: list[Axes]) -> None:
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), frameon=False)


def _save(fig: Figure, path: Path) -> None:
    # No "Software" (matplotlib version) or date chunk: the same results give the same file.
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})


def _figure(results: dict[str, Any], title: str, panels: int, width: float,
            sharey: bool = False) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width, 3.2 * panels + 1.2), layout="constrained")
    axes = [fig.add_subplot(panels, 1, 1)]
    axes += [fig.add_subplot(panels, 1, i + 1, sharey=axes[0] if sharey else None) for i in range(1, panels)]
    fig.suptitle(f"{title}\n{machine_line(results)}", fontsize=12)
    return fig, axes


def _width(results: dict[str, Any]) -> float:
    return max(8.0, 1.3 * len(_scenarios(results)) + 3.0)


def plot_throughput(results: dict[str, Any], path: Path) -> Path:
    servers = servers_of(results)
    colours = _colour(servers)
    fig, axes = _figure(results, f"{SUBJECT} benchmark: throughput (median)", 2, _width(results))
    for ax, key, label in ((axes[0], "rps", "requests/s"),
                           (axes[1], "rps_per_cpu_s", "requests per CPU-second\nof the proxy")):
        groups = _groups(results, servers, key)
        _grouped_bars(ax, groups, servers, colours, label, _logarithmic(groups))
    _legend(fig, axes)
    _save(fig, path)
    return path


def plot_latency(results: dict[str, Any], path: Path) -> Path:
    servers = servers_of(results)
    colours = _colour(servers)
    fig, axes = _figure(results, f"{SUBJECT} benchmark: latency percentiles (median over rounds)", len(PERCENTILES),
                        _width(results), sharey=True)
    panels = [_groups(results, servers, key) for key, _ in PERCENTILES]
    logarithmic = _logarithmic(g for groups in panels for g in groups)  # one scale for the three panels
    for ax, groups, (_, label) in zip(axes, panels, PERCENTILES, strict=True):
        _grouped_bars(ax, groups, servers, colours, f"{label} ms", logarithmic)
        ax.set_title(label, fontsize=10, loc="left")
    _legend(fig, axes)
    _save(fig, path)
    return path


def write_report(results: dict[str, Any], out_dir: Path, stem: str) -> tuple[Path, list[Path]]:
    """Write `<stem>.md`, `<stem>-throughput.png` and `<stem>-latency.png` into out_dir; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = [plot_throughput(results, out_dir / f"{stem}-throughput.png"),
             plot_latency(results, out_dir / f"{stem}-latency.png")]
    md = out_dir / f"{stem}.md"
    md.write_text(markdown(results, [p.name for p in plots]), encoding="utf-8")
    return md, plots
