#!/usr/bin/env python3
"""Drives the firmware's serial command line through QEMU's stdin and checks the answers.

The expected labels and scores come from `serial-expect.tsv`, written by the firmware's
build.rs with the *host* build of riffle-core on the same pixel bytes. The session swaps
adapters between inputs (unmerged and merged), uploads a valid adapter, then corrupt
ones that must be rejected while the previous adapter keeps answering.

    serial_test.py --elf ELF --expect serial-expect.tsv --models models/digits --base mlp
"""
import argparse
import re
import subprocess
import sys

RESULT = re.compile(
    r"^result adapter=(\S+) mode=(\S+) index=(\d+) label=(\S+) instructions=(\d+) scores=(\S+)"
)


def load_expect(path):
    table, hexes = {}, {}
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            sample, hx, adapter, index, label, scores = line.rstrip("\n").split("\t")
            hexes[sample] = hx
            table[(sample, adapter)] = (int(index), label, scores.split(","))
    return table, hexes


def qemu_command(machine, cpu, elf):
    """QEMU for an MPS2 board (ARM) or the RISC-V `virt` board, UART on stdio."""
    common = ["-display", "none", "-serial", "stdio", "-monitor", "none", "-icount", "shift=0"]
    if machine == "virt":
        return ["qemu-system-riscv32", "-machine", "virt", "-bios", "none", *common, "-kernel", elf]
    return [
        "qemu-system-arm", "-cpu", cpu, "-machine", machine, *common,
        "-semihosting-config", "enable=on,target=native", "-kernel", elf,
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--elf", required=True)
    ap.add_argument("--expect", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--base", default="mlp")
    ap.add_argument("--other-base", default="cnn")
    ap.add_argument("--machine", default="mps2-an386", help="an MPS2 board, or `virt` (RISC-V)")
    ap.add_argument("--cpu", default="cortex-m4")
    ap.add_argument("--timeout", type=int, default=120)
    ap.add_argument("--log", default=None)
    a = ap.parse_args()

    table, hexes = load_expect(a.expect)
    digits, rotated, inverted = "digits#0", "rotated#0", "inverted#0"
    noisy = open(f"{a.models}/{a.base}-noisy.gguf", "rb").read()
    crc = bytearray(noisy)
    # A bit flip inside the tensor data, which only the CRC can catch. The file ends with
    # at most 31 bytes of alignment padding after the data span, so 40 bytes from the end
    # is inside it (a flip in the padding changes no value and is rightly accepted).
    crc[-40] ^= 0x40
    truncated = noisy[: len(noisy) // 2]
    foreign = open(f"{a.models}/{a.other_base}-noisy.gguf", "rb").read()

    # (command, what to check): ("run", sample, adapter, merged) or ("text", substring).
    steps = [
        ("list", ("text", "[active]")),
        (f"run {hexes[digits]}", ("run", digits, "base", False)),
        ("use rotated", ("text", "ok: rotated active (unmerged")),
        (f"run {hexes[rotated]}", ("run", rotated, "rotated", False)),
        ("use inverted", ("text", "ok: inverted active (unmerged")),
        (f"run {hexes[rotated]}", ("run", rotated, "inverted", False)),
        (f"run {hexes[inverted]}", ("run", inverted, "inverted", False)),
        ("use parity", ("text", "ok: parity active")),
        (f"run {hexes[digits]}", ("run", digits, "parity", False)),
        ("base", ("text", "ok: bare base active")),
        (f"run {hexes[rotated]}", ("run", rotated, "base", False)),
        ("merge on", ("text", "ok: merged mode on")),
        ("use rotated", ("text", "ok: rotated active (merged")),
        (f"run {hexes[rotated]}", ("run", rotated, "rotated", True)),
        ("use inverted", ("text", "ok: inverted active (merged")),
        (f"run {hexes[inverted]}", ("run", inverted, "inverted", True)),
        ("use parity", ("text", "ok: parity active (merged")),
        (f"run {hexes[digits]}", ("run", digits, "parity", True)),
        ("merge off", ("text", "ok: merged mode off")),
        (f"upload {noisy.hex()}", ("text", "ok: uploaded adapter `noisy`")),
        ("use 4", ("text", "ok: noisy active")),
        (f"run {hexes[digits]}", ("run", digits, "noisy", False)),
        (f"upload {bytes(crc).hex()}", ("text", "error: upload rejected: CRC mismatch")),
        (f"run {hexes[digits]}", ("run", digits, "noisy", False)),
        (f"upload {truncated.hex()}", ("text", "error: upload rejected: ")),
        (f"upload {foreign.hex()}", ("text", "error: upload rejected: unsupported model")),
        ("upload 4747zz", ("text", "error: upload rejected: not a hex digit")),
        ("merge on", ("text", "ok: merged mode on")),
        (f"run {hexes[inverted]}", ("run", inverted, "noisy", True)),
        ("list", ("text", "4  noisy")),
        ("stats", ("text", "stack peak")),
        ("quit", ("text", "bye")),
    ]
    stdin = "".join(cmd + "\n" for cmd, _ in steps)
    cmd = qemu_command(a.machine, a.cpu, a.elf)
    try:
        p = subprocess.run(cmd, input=stdin.encode(), capture_output=True, timeout=a.timeout)
        out, rc = p.stdout.decode(errors="replace"), p.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = (e.stdout or b"").decode(errors="replace"), "timeout"
    if a.log:
        open(a.log, "w").write(out)

    failures = []
    # The answers come after the prompts; split the transcript at each prompt.
    if "self-check PASS" not in out:
        failures.append("boot self-check did not pass")
    chunks = out.split("\n> ")[1:]
    if len(chunks) < len(steps):
        failures.append(f"only {len(chunks)} of {len(steps)} commands answered")
    results = []
    for (command, check), chunk in zip(steps, chunks):
        label = command if len(command) < 60 else command[:57] + "..."
        if check[0] == "text":
            if check[1] not in chunk:
                failures.append(f"`{label}`: expected `{check[1]}` in {chunk.strip()[:300]!r}")
            continue
        _, sample, adapter, merged = check
        m = next((RESULT.match(l.strip()) for l in chunk.splitlines() if l.startswith("result")), None)
        if not m:
            failures.append(f"`{label}`: no result line in {chunk.strip()[:300]!r}")
            continue
        got_adapter, mode, index, lab, instr, scores = m.groups()
        want_index, want_label, want_scores = table[(sample, adapter)]
        scores = scores.split(",")
        ok = got_adapter == adapter and int(index) == want_index and lab == want_label
        ok = ok and mode == ("merged" if merged else "unmerged") and len(scores) == len(want_scores)
        if ok and not merged:
            ok = scores == want_scores  # same bits, same 4-decimal text
        if ok and merged:
            ok = all(abs(float(x) - float(y)) <= 2e-4 for x, y in zip(scores, want_scores))
        results.append((sample, adapter, mode, lab, int(instr)))
        if not ok:
            failures.append(
                f"`{label}` ({sample} under {adapter}, {'merged' if merged else 'unmerged'}): "
                f"got adapter={got_adapter} mode={mode} index={index} label={lab} scores={scores}, "
                f"host says index={want_index} label={want_label} scores={want_scores}"
            )
    if rc != 0:
        failures.append(f"QEMU exit status {rc} (semihosting exit after `quit` should be 0)")

    for sample, adapter, mode, lab, instr in results:
        print(f"  {sample:<11} {adapter:<9} {mode:<9} -> {lab:<5} {instr:>8} instructions")
    if failures:
        print("serial test FAILED:")
        for f in failures:
            print("  - " + f)
        print("--- transcript tail ---")
        print(out[-3000:])
        sys.exit(1)
    print(f"serial test: {len(steps)} commands, {len(results)} answers match the host build")


if __name__ == "__main__":
    main()
