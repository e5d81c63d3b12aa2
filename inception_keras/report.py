"""Text tables of network costs, laid out like Table 1 of Szegedy et al. (2015)."""

from __future__ import annotations

from inception_keras.cost import NetworkCost

# Table 1 as published: row -> (params, ops). "conv2" is the paper's 3x3 row (depth 2),
# which holds our conv2 (the 1x1 reduce) and conv3.
PAPER_TABLE1 = {
    "conv1": (2_700, 34_000_000), "conv2+conv3": (112_000, 360_000_000),
    "inception_3a": (159_000, 128_000_000), "inception_3b": (380_000, 304_000_000),
    "inception_4a": (364_000, 73_000_000), "inception_4b": (437_000, 88_000_000),
    "inception_4c": (463_000, 100_000_000), "inception_4d": (580_000, 119_000_000),
    "inception_4e": (840_000, 170_000_000), "inception_5a": (1_072_000, 54_000_000),
    "inception_5b": (1_388_000, 71_000_000), "predictions": (1_000_000, 1_000_000),
}

COLUMNS = ("type", "patch/stride", "output size", "depth", "#1x1", "#3x3 reduce", "#3x3", "#5x5 reduce", "#5x5",
           "pool proj", "params", "ops")


def _shape(shape) -> str:
    return "x".join(str(size) for size in shape) if len(shape) == 3 else f"1x1x{shape[0]}"


def summary_rows(cost: NetworkCost) -> list[tuple[str, ...]]:
    rows = []
    for block in cost.blocks:
        widths = [str(width) if width or i in (1, 3) else "" for i, width in enumerate(block.widths)]
        widths += [""] * (6 - len(widths))
        rows.append((block.type, block.patch, _shape(block.output_shape), str(block.depth) if block.depth else "",
                     *widths, f"{block.params:,}" if block.params else "", f"{block.macs:,}" if block.macs else ""))
    return rows


def format_table(rows: list[tuple[str, ...]], numeric: set[int]) -> list[str]:
    """Text lines of a table whose first row is the header: columns padded to their widest cell, the
    `numeric` ones right-aligned, a rule under the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(width) if i in numeric else cell.ljust(width)
                       for i, (cell, width) in enumerate(zip(row, widths))).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return lines


def summary_text(cost: NetworkCost) -> str:
    """The per-block table and the totals, as printed by `inception-keras summary`."""
    lines = format_table([COLUMNS] + summary_rows(cost), set(range(3, len(COLUMNS))))
    h, w, c = cost.input_shape
    lines.insert(0, f"{cost.spec_name}: input {h}x{w}x{c}")
    lines += [
        "",
        f"training model (with aux heads): {cost.total_params:,} params "
        f"({cost.total_trainable_params:,} trainable), {cost.total_macs:,} multiply-adds",
        f"inference model (no aux heads):  {cost.inference_params:,} params "
        f"({cost.inference_trainable_params:,} trainable), {cost.inference_macs:,} multiply-adds "
        f"({cost.inference_macs / 1e9:.2f} G)",
    ]
    return "\n".join(lines)


def _k(value: int) -> str:
    return f"{value / 1000:,.1f}K"


def _m(value: int) -> str:
    return f"{value / 1e6:,.1f}M"


def paper_comparison_markdown(cost: NetworkCost) -> str:
    """Markdown table: Table 1's published params/ops next to ours, for the README."""
    blocks = {block.name: block for block in cost.blocks}
    ours = {name: (blocks[name].params, blocks[name].macs) for name in PAPER_TABLE1 if name in blocks}
    ours["conv2+conv3"] = (blocks["conv2"].params + blocks["conv3"].params, blocks["conv2"].macs + blocks["conv3"].macs)
    lines = ["| Table 1 row | paper params | ours | paper ops | ours (multiply-adds) |",
             "|---|---:|---:|---:|---:|"]
    for name, (params, ops) in PAPER_TABLE1.items():
        our_params, our_macs = ours[name]
        lines.append(f"| {name} | {_k(params)} | {_k(our_params)} ({our_params:,}) | {_m(ops)} | "
                     f"{_m(our_macs)} ({our_macs:,}) |")
    return "\n".join(lines)
