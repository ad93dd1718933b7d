#!/usr/bin/env python3
"""Size report of the firmware images and the check against firmware/size-budget.toml.

For each ELF: text, data, bss (llvm-size), then flash = text + data and static RAM =
data + bss, and flash split into the embedded model (base + adapters, or the baked blob), the embedded
self-check data (held-out sets, expected predictions, sample) and everything else
("code": the runtime, the command line, formatting, start-up, constants), measured
from the sizes of the `riffle_firmware::generated::*` symbols (llvm-nm).

    size_report.py --budget FILE [--update] TARGET:IMAGE:ELF ...

Fails (exit 1) when flash, ram or code is more than 3% past its budget; prints a note
to lower the budget when one is more than 3% under it. `--update` rewrites the budget
file from the current build.

Where a target has a `board-only` image (the runtime-only probe without riffle: same
start-up, board code and report), the code of each `runtime-only*` and `baked-only*`
image less the board-only image's is printed as the code riffle itself adds.
"""
import argparse
import glob
import os
import subprocess
import sys
import tomllib

TOLERANCE = 0.03
KEYS = ("flash", "ram", "code")


def tool(name):
    sysroot = subprocess.run(
        ["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True
    ).stdout.strip()
    found = glob.glob(os.path.join(sysroot, "lib", "rustlib", "*", "bin", name))
    if not found:
        sys.exit(f"{name} not found: rustup component add llvm-tools")
    return found[0]


def measure(elf, size_tool, nm_tool):
    out = subprocess.run([size_tool, "-A", elf], capture_output=True, text=True, check=True).stdout
    sec = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sec[parts[0]] = int(parts[1])
    text = sum(sec.get(s, 0) for s in (".vector_table", ".init", ".trap", ".text", ".rodata"))
    data = sec.get(".data", 0)
    bss = sec.get(".bss", 0) + sec.get(".uninit", 0)
    nm = subprocess.run([nm_tool, "-S", "-C", elf], capture_output=True, text=True, check=True).stdout
    weights = selfcheck = 0
    for line in nm.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 4 or "riffle_firmware::generated::" not in parts[3]:
            continue
        size = int(parts[1], 16)
        name = parts[3]
        if any(f"generated::{k}" in name for k in ("BASE", "ADAPTERS", "BAKED")):
            weights += size
        elif any(f"generated::{k}" in name for k in ("HELDOUT", "EXPECTED", "RT_SAMPLE")):
            selfcheck += size
    flash = text + data
    return {
        "text": text,
        "data": data,
        "bss": bss,
        "flash": flash,
        "ram": data + bss,
        "weights": weights,
        "selfcheck": selfcheck,
        "code": flash - weights - selfcheck,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", required=True)
    ap.add_argument("--update", action="store_true")
    ap.add_argument("images", nargs="+", help="TARGET:IMAGE:ELF")
    a = ap.parse_args()
    size_tool, nm_tool = tool("llvm-size"), tool("llvm-nm")
    rows = []
    for spec in a.images:
        target, image, elf = spec.split(":", 2)
        rows.append((target, image, measure(elf, size_tool, nm_tool)))

    print(
        f"  {'target':<29} {'image':<17} {'text':>8} {'data':>6} {'bss':>8} | "
        f"{'flash':>8} {'weights':>8} {'selfchk':>8} {'code':>7} | {'ram':>8}"
    )
    for target, image, m in rows:
        print(
            f"  {target:<29} {image:<17} {m['text']:>8} {m['data']:>6} {m['bss']:>8} | "
            f"{m['flash']:>8} {m['weights']:>8} {m['selfcheck']:>8} {m['code']:>7} | {m['ram']:>8}"
        )

    base = {t: m for t, image, m in rows if image == "board-only"}
    for target, image, m in rows:
        if image.startswith(("runtime-only", "baked-only")) and target in base:
            b = base[target]
            print(
                f"  riffle code in {target} {image}: {m['code'] - b['code']} bytes "
                f"(code {m['code']} - board-only {b['code']}); "
                f"static RAM {m['ram'] - b['ram']} bytes"
            )

    if a.update:
        lines = [
            "# Size budgets of the firmware images, in bytes (scripts/test-firmware checks them).",
            "# flash = text + data; ram = static RAM (.data + .bss; the stack is measured at run",
            "# time, see docs/firmware.md); code = flash less the embedded model and self-check",
            "# data. A build more than 3% past a figure fails; more than 3% under it, lower the",
            "# figure: firmware/cortex-m4/tools/size_report.py --update rewrites this file.",
        ]
        for target, image, m in rows:
            lines.append("")
            lines.append(f'["{target}".{image}]')
            for k in KEYS:
                lines.append(f"{k} = {m[k]}")
        with open(a.budget, "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"budget written to {a.budget}")
        return

    with open(a.budget, "rb") as f:
        budget = tomllib.load(f)
    failures, notes = [], []
    for target, image, m in rows:
        b = budget.get(target, {}).get(image)
        if b is None:
            failures.append(f"{target} {image}: no budget (run size_report.py --update)")
            continue
        for k in KEYS:
            limit = b.get(k)
            if limit is None:
                failures.append(f"{target} {image}: no `{k}` budget")
                continue
            if m[k] > limit * (1 + TOLERANCE):
                failures.append(
                    f"{target} {image}: {k} {m[k]} bytes is {100 * (m[k] / limit - 1):.1f}% past the budget {limit}"
                )
            elif m[k] < limit * (1 - TOLERANCE):
                notes.append(
                    f"{target} {image}: {k} {m[k]} bytes is {100 * (1 - m[k] / limit):.1f}% under the budget {limit}: lower it"
                )
    for n in notes:
        print("NOTE: " + n)
    if failures:
        for f in failures:
            print("FAIL: " + f)
        print(
            "If the growth is intended, rewrite the budget with "
            "`RIFFLE_FW_UPDATE_BUDGET=1 scripts/test-firmware` and commit firmware/size-budget.toml."
        )
        sys.exit(1)
    print(f"sizes within {int(TOLERANCE * 100)}% of {os.path.basename(a.budget)}")


if __name__ == "__main__":
    main()
