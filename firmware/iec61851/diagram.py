"""The connector state table as text: a table, a Graphviz ``dot`` graph or a Mermaid diagram.

Generated from :data:`firmware.iec61851.machine.TRANSITIONS`, so the drawing can never drift from
the machine that runs.
"""

from __future__ import annotations

from collections import defaultdict

from firmware.iec61851.machine import STATE_DESCRIPTIONS, STATES, transition_rows


def _edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for trigger, source, dest, guard in transition_rows():
        label = f"{trigger} [{guard}]" if guard else trigger
        if label not in edges[(source, dest)]:
            edges[(source, dest)].append(label)
    return edges


def render(fmt: str = "table") -> str:
    if fmt == "dot":
        lines = ["digraph connector {", "  rankdir=LR;", "  node [shape=box];"]
        for state in STATES:
            lines.append(f'  "{state}" [tooltip="{STATE_DESCRIPTIONS[state]}"];')
        for (source, dest), labels in _edges().items():
            lines.append(f'  "{source}" -> "{dest}" [label="{", ".join(labels)}"];')
        lines.append("}")
        return "\n".join(lines)
    if fmt == "mermaid":
        lines = ["stateDiagram-v2", "  [*] --> A1"]
        for (source, dest), labels in _edges().items():
            lines.append(f"  {source} --> {dest}: {', '.join(labels)}")
        return "\n".join(lines)
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}; allowed: table, dot, mermaid")
    width = max(len(s) for s in STATES)
    lines = ["States (IEC 61851-1 Annex A; digit 1 = no PWM, 2 = PWM offer):"]
    lines += [f"  {state:<{width}}  {STATE_DESCRIPTIONS[state]}" for state in STATES]
    lines.append("")
    lines.append("Transitions (tried in this order; first whose guard holds wins):")
    rows = transition_rows()
    w_trigger = max(len(r[0]) for r in rows)
    for trigger, source, dest, guard in rows:
        lines.append(f"  {trigger:<{w_trigger}}  {source:>6} -> {dest:<6}  {guard}")
    return "\n".join(lines)
