"""`riffle-train` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="riffle-train", description="riffle training path")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("digits", help="train and export the digits bases, adapters and held-out sets")
    d.add_argument("--out", default="models/digits")
    g = sub.add_parser("golden", help="write golden JSON files for the Rust tests")
    g.add_argument("--models", default="models/digits")
    g.add_argument("--out", default="tests/data/golden")
    ip = sub.add_parser("import-peft", help="convert a PEFT OFT/BOFT adapter folder into a riffle adapter (runs `riffle import-peft`, "
                        "adds the float64 Cayley-Neumann truncation check)")
    ip.add_argument("dir", help="PEFT adapter folder (adapter_config.json + adapter_model.safetensors)")
    ip.add_argument("--base", required=True, help="the base GGUF the adapter binds to")
    ip.add_argument("-o", "--output", required=True, help="adapter GGUF to write")
    ip.add_argument("--task", default=None, help="adapter.task_name (default: the folder's name)")
    ip.add_argument("--labels", default=None, help="comma-separated labels of a head with a new size")
    ip.add_argument("--max-truncation-error", type=float, default=None,
                    help="largest accepted Cayley-Neumann truncation error (spectral norm per block; "
                         "default 1e-2)")
    m = sub.add_parser("minilm", help="all-MiniLM-L6-v2: convert to GGUF, train text adapters")
    msub = m.add_subparsers(dest="minilm_cmd", required=True)
    mc = msub.add_parser("convert", help="write minilm-{f32,f16,q8_0}.gguf (never committed)")
    mc.add_argument("--out", default="models/minilm")
    mt = msub.add_parser("train", help="train text adapters with their own heads")
    mt.add_argument("--base", default="models/minilm/minilm-f32.gguf")
    mt.add_argument("--tasks", default="sentiment,topic,language")
    mt.add_argument("--out", default="models/minilm-adapters")
    mt.add_argument("--method", default="gsoft")
    mt.add_argument("--block-size", type=int, default=8)
    mt.add_argument("--adapt-layers", type=int, default=2)
    mt.add_argument("--dtype", default="f16", choices=["f16", "f32"])
    mt.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: up to 2)")
    mt.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when available, else cpu)")
    mr = msub.add_parser("readme", help="rewrite the adapters' README.md from their report.json")
    mr.add_argument("--out", default="models/minilm-adapters")
    mg = msub.add_parser("golden", help="write tests/data/golden/minilm-<task>.json (float64 logits)")
    mg.add_argument("--base", default="models/minilm/minilm-f32.gguf")
    mg.add_argument("--adapters", default="models/minilm-adapters")
    mg.add_argument("--out", default="tests/data/golden")
    mg.add_argument("--tasks", default="sentiment,topic,language")
    c = sub.add_parser("compare", help="per-task tables: GSOFT, Double GSOFT, OFT, BOFT against PEFT LoRA "
                                       "(run under train/peft-env)")
    c.add_argument("--tasks", default="rotated,inverted,noisy,parity,sentiment,topic,language",
                   help="digits: rotated,inverted,noisy,parity; text: sentiment,topic,language")
    c.add_argument("--methods", default="gsoft,double_gsoft,oft,boft,lora,head",
                   help="head = the new head alone on the frozen base (tasks with a new head only)")
    c.add_argument("--out", default="train/results/compare", help="folder for compare.md and compare.json")
    c.add_argument("--digits-base", default="models/digits/mlp.gguf")
    c.add_argument("--minilm-base", default="models/minilm/minilm-f32.gguf")
    c.add_argument("--block-size", type=int, default=8, help="gsoft, double_gsoft, oft")
    c.add_argument("--boft-block-size", type=int, default=8)
    c.add_argument("--boft-factors", type=int, default=2)
    c.add_argument("--lora-rank", type=int, default=4)
    c.add_argument("--lora-alpha", type=int, default=8)
    c.add_argument("--digits-lr", type=float, default=1e-2)
    c.add_argument("--text-train", type=int, default=1500, help="training examples per text task (at most)")
    c.add_argument("--text-heldout", type=int, default=500, help="held-out examples per text task (at most)")
    c.add_argument("--text-max-length", type=int, default=64, help="tokens per text, [CLS]/[SEP] included")
    c.add_argument("--text-epochs", type=int, default=2)
    c.add_argument("--text-lr", type=float, default=3e-3)
    c.add_argument("--adapt-layers", type=int, default=2, help="top MiniLM blocks adapted")
    c.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    b = sub.add_parser("gpu-bench", help="training step time and peak memory: riffle GSOFT/Double GSOFT/OFT "
                                         "against PEFT LoRA/OFT/BOFT (needs torch, transformers, peft)")
    b.add_argument("--models", default="minilm,roberta-base")
    b.add_argument("--methods", default="gsoft,double_gsoft,oft,lora,peft_oft,peft_boft")
    b.add_argument("--batch", type=int, default=32)
    b.add_argument("--seq", type=int, default=128)
    b.add_argument("--steps", type=int, default=10, help="timed steps")
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--block-size", type=int, default=8, help="ours and PEFT OFT")
    b.add_argument("--boft-block-size", type=int, default=8)
    b.add_argument("--boft-factors", type=int, default=2)
    b.add_argument("--lora-rank", type=int, default=4)
    b.add_argument("--lora-alpha", type=int, default=8)
    b.add_argument("--tiny", action="store_true", help="tiny encoders (hidden 32, 2 layers) for a CPU smoke run")
    b.add_argument("--autocast", default=None, choices=["bf16", "fp16"])
    b.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    b.add_argument("--no-boft-cuda-ext", action="store_true",
                   help="do not let PEFT BOFT compile fbd_cuda (it then builds one factor)")
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    b.add_argument("--weight-bank", default="auto", choices=["auto", "on", "off"],
                   help="ours: batched adapted weights (layers.WeightBank); auto = on for CUDA")
    b.add_argument("--memory-efficient", action="store_true",
                   help="ours: the weight bank's linears keep no adapted weight for the backward pass")
    b.add_argument("--out", default=None, help="folder for gpu-bench.md and gpu-bench.json")
    lm = sub.add_parser("llm", help="SmolLM2-135M-Instruct chat adapters: compare, score, held-out files, ids")
    lsub = lm.add_subparsers(dest="llm_cmd", required=True)
    lc = lsub.add_parser("compare", help="base zero/few-shot, GSOFT, Double GSOFT, OFT, BOFT, PEFT LoRA per task "
                                         "(LoRA rows need train/peft-env)")
    lc.add_argument("--base", default=None, help="llama GGUF (default ~/.cache/riffle/smollm2/...Q4_1.gguf)")
    lc.add_argument("--tasks", default="sentiment,topic,language,news_json")
    lc.add_argument("--methods", default="gsoft,double_gsoft,oft,boft,lora")
    lc.add_argument("--out", default="train/results/llm")
    lc.add_argument("--keep-best", default=None, help="folder for each task's best adapter smollm2-<task>.gguf")
    lc.add_argument("--compatible-ids", default="train/results/llm/base-ids.json",
                    help="json from `llm ids` (its compatible ids go into adapter.compatible_model_ids)")
    lc.add_argument("--train", type=int, default=2000)
    lc.add_argument("--heldout", type=int, default=200)
    lc.add_argument("--steps", type=int, default=150)
    lc.add_argument("--batch", type=int, default=16)
    lc.add_argument("--lr", type=float, default=3e-3)
    lc.add_argument("--max-prompt", type=int, default=160)
    lc.add_argument("--few-shot", type=int, default=3)
    lc.add_argument("--eval-batch", type=int, default=64)
    lc.add_argument("--blocks", default="all", help="adapted blocks: all or comma-separated indices")
    lc.add_argument("--block-size", type=int, default=8)
    lc.add_argument("--lora-rank", type=int, default=4)
    lc.add_argument("--lora-alpha", type=int, default=8)
    lc.add_argument("--device", default=None)
    lc.add_argument("--threads", type=int, default=None)
    lc.add_argument("--prepared", default=None, help="folder of <task>.split.json from `llm prepare` (no corpora needed)")
    lc.add_argument("--note", default="", help="a line for the table (e.g. the CPU fallback's shortening)")
    lt = lsub.add_parser("train", help="train an adapter on your own chats (JSONL: {\"messages\": [...]} or "
                                       "{\"prompt\", \"completion\"}) over a llama GGUF; writes the adapter GGUF")
    lt.add_argument("--base", required=True, help="the llama GGUF the adapter will run on (any weight type)")
    lt.add_argument("--data", required=True, help="training conversations, JSONL")
    lt.add_argument("--task", required=True, help="the adapter's task name (what `:use`, `--task` and `model` name)")
    lt.add_argument("--out", required=True, help="the adapter GGUF to write (F16 parameters)")
    lt.add_argument("--validation", default=None, help="held-out conversations, JSONL (default: --validation-split "
                                                        "of --data when it has at least 20)")
    lt.add_argument("--validation-split", type=float, default=0.1, help="share held out when there is no --validation (%(default)s)")
    lt.add_argument("--method", default="gsoft", choices=["gsoft", "double_gsoft", "oft", "boft"], help="(%(default)s)")
    lt.add_argument("--block-size", type=int, default=8, help="rotation block size b (%(default)s)")
    lt.add_argument("--blocks", default="all", help="adapted blocks: all or comma-separated indices")
    lt.add_argument("--epochs", type=float, default=3.0, help="passes over the data, unless --steps (%(default)s)")
    lt.add_argument("--steps", type=int, default=None, help="optimizer steps (default: from --epochs)")
    lt.add_argument("--batch", type=int, default=8, help="conversations per step (%(default)s)")
    lt.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate, 10%% warm-up, linear decay (%(default)s)")
    lt.add_argument("--max-length", type=int, default=512, help="tokens per conversation, longer ones keep their end (%(default)s)")
    lt.add_argument("--eval-limit", type=int, default=50, help="held-out conversations answered greedily for the report (%(default)s)")
    lt.add_argument("--compatible", action="append", default=[],
                    help="another GGUF of the same weights (e.g. a requantization) the adapter may bind to; repeatable")
    lt.add_argument("--seed", type=int, default=0, help="batch order and held-out split (%(default)s)")
    lt.add_argument("--device", default=None, help="cuda when there is one, else cpu")
    lt.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    lt.add_argument("--report", default=None, help="write the report (JSON) here too")
    lp = lsub.add_parser("prepare", help="write each task's split as <task>.split.json for a machine without corpora")
    lp.add_argument("--tasks", default="sentiment,topic,language,news_json")
    lp.add_argument("--out", required=True)
    lp.add_argument("--train", type=int, default=2000)
    lp.add_argument("--heldout", type=int, default=200)
    ls = lsub.add_parser("score", help="score generated answers against a task's held-out file")
    ls.add_argument("--task", required=True)
    ls.add_argument("--predictions", required=True,
                    help="jsonl, one line per held-out example in order: a JSON string or {\"text\": ...}")
    ls.add_argument("--heldout-dir", default=None, help="default models/smollm2-adapters/heldout")
    lh = lsub.add_parser("heldout", help="write a task's held-out chats as jsonl (rebuilt from the corpus)")
    lh.add_argument("--task", required=True)
    lh.add_argument("--out", required=True)
    lh.add_argument("--write-committed", action="store_true",
                    help="rewrite models/smollm2-adapters/heldout/<task>[.ids].jsonl from the split instead")
    lh.add_argument("--heldout", type=int, default=200)
    le = lsub.add_parser("eval", help="generate (greedy) and score a task's held-out chats with an adapter file")
    le.add_argument("--task", required=True)
    le.add_argument("--adapter", default=None, help="adapter GGUF (default: the base alone)")
    le.add_argument("--base", default=None)
    le.add_argument("--predictions", default=None, help="write the answers here (jsonl, {id, text})")
    le.add_argument("--limit", type=int, default=None, help="first N held-out chats only")
    le.add_argument("--heldout-dir", default=None, help="default models/smollm2-adapters/heldout")
    le.add_argument("--device", default="cpu")
    le.add_argument("--autocast", action="store_true", help="bf16 autocast (as the comparison ran on the GPU)")
    le.add_argument("--threads", type=int, default=None)
    lq = lsub.add_parser("parity", help="held-out score of each committed adapter: trainer (fp32 CPU) against "
                                        "`riffle generate --temperature 0`")
    lq.add_argument("--tasks", default="sentiment,topic,language,news_json")
    lq.add_argument("--base", default=None)
    lq.add_argument("--riffle", default="target/release/riffle", help="the riffle binary (release build)")
    lq.add_argument("--out", default="train/results/llm")
    lq.add_argument("--limit", type=int, default=None, help="first N held-out chats only")
    lq.add_argument("--threads", type=int, default=1)
    lm_ = lsub.add_parser("memory", help="peak memory of a training step, each method in its own process (CPU; "
                                         "LoRA needs train/peft-env's python)")
    lm_.add_argument("--methods", default="gsoft,lora,double_gsoft,oft,boft",
                     help="comma-separated; ours may name an adapter path: gsoft+plain, gsoft+lean, gsoft+bank, "
                          "gsoft+bank_lean (without one: inject's default, or RIFFLE_ADAPTER_PATH)")
    lm_.add_argument("--base", default=None)
    lm_.add_argument("--out", default="train/results/llm")
    lm_.add_argument("--repeats", type=int, default=3)
    lm_.add_argument("--batch", type=int, default=2)
    lm_.add_argument("--tokens", type=int, default=64)
    lm_.add_argument("--steps", type=int, default=2)
    li = lsub.add_parser("ids", help="model ids of the base and its Q4_0/Q8_0/F16 requantizations (llama-quantize)")
    li.add_argument("--base", default=None)
    li.add_argument("--out", default="train/results/llm/base-ids.json")
    lf = lsub.add_parser("fixture", help="write tests/data/llama/: a tiny random llama, a GSOFT adapter, "
                                         "float64 logits with and without it")
    lf.add_argument("--out", default="tests/data/llama")
    args = ap.parse_args(argv)
    if args.cmd == "digits":
        from .digits import build_all
        build_all(args.out)
    elif args.cmd == "golden":
        from .golden import write_golden
        write_golden(args.models, args.out)
    elif args.cmd == "import-peft":
        from .peft_import import DEFAULT_MAX_TRUNCATION_ERROR, ImportError_, import_peft
        try:
            rep = import_peft(args.dir, args.base, args.output, task=args.task,
                              labels=args.labels.split(",") if args.labels else None,
                              max_truncation_error=args.max_truncation_error or DEFAULT_MAX_TRUNCATION_ERROR)
        except (ImportError_, FileNotFoundError) as e:
            print(f"riffle-train import-peft: {e}", file=sys.stderr)
            return 2
        print(rep.describe())
    elif args.cmd == "gpu-bench":
        from . import gpu_bench
        cfg = gpu_bench.BenchConfig(
            models=tuple(args.models.split(",")), methods=tuple(args.methods.split(",")), batch=args.batch,
            seq=args.seq, steps=args.steps, warmup=args.warmup, block_size=args.block_size,
            boft_block_size=args.boft_block_size, boft_factors=args.boft_factors, lora_rank=args.lora_rank,
            lora_alpha=args.lora_alpha, tiny=args.tiny, autocast=args.autocast, device=args.device,
            boft_cuda_ext=not args.no_boft_cuda_ext, threads=args.threads,
            weight_bank={"auto": None, "on": True, "off": False}[args.weight_bank],
            memory_efficient=args.memory_efficient)
        res = gpu_bench.run(cfg)
        command = "python -m riffle_train " + " ".join(argv if argv is not None else sys.argv[1:])
        print(gpu_bench.markdown(res, command))
        if args.out:
            gpu_bench.write(res, args.out, command)
    elif args.cmd == "compare":
        from . import compare
        command = "python -m riffle_train " + " ".join(argv if argv is not None else sys.argv[1:])
        compare.run(args.tasks.split(","), args.out, methods=args.methods.split(","),
                    digits_base=args.digits_base, minilm_base=args.minilm_base,
                    text_budget=compare.TextBudget(args.text_train, args.text_heldout, args.text_max_length,
                                                   args.text_epochs, lr=args.text_lr,
                                                   adapt_layers=args.adapt_layers, threads=args.threads),
                    digits_budget=compare.DigitsBudget(dict(compare.DIGITS_EPOCHS), lr=args.digits_lr,
                                                       threads=args.threads),
                    spec_kw=dict(block_size=args.block_size, boft_block_size=args.boft_block_size,
                                 boft_factors=args.boft_factors, lora_rank=args.lora_rank,
                                 lora_alpha=args.lora_alpha),
                    command=command)
    elif args.cmd == "llm":
        return _llm(args, argv)
    elif args.cmd == "minilm":
        from . import minilm
        if args.minilm_cmd == "convert":
            minilm.convert(args.out)
        elif args.minilm_cmd == "readme":
            import json
            from pathlib import Path
            out = Path(args.out)
            reports = json.loads((out / "report.json").read_text())
            for task, r in reports.items():  # corpus sizes for reports written before they were recorded
                if "available_examples" not in r and task in minilm.TEXT_TASKS:
                    r["available_examples"] = len(minilm.TEXT_TASKS[task].loader()[0])
            (out / "report.json").write_text(json.dumps(reports, indent=1) + "\n")
            minilm.write_readme(out, reports)
        elif args.minilm_cmd == "golden":
            from .minilm_golden import write_minilm_golden
            write_minilm_golden(args.base, args.adapters, args.out, args.tasks.split(","))
        else:
            import json
            from pathlib import Path
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            rep_path = out / "report.json"
            reports = json.loads(rep_path.read_text()) if rep_path.exists() else {}
            for task in args.tasks.split(","):
                reports[task] = minilm.train_text_adapter(
                    args.base, task, out, method=args.method, block_size=args.block_size,
                    adapt_layers=args.adapt_layers, dtype=args.dtype,
                    threads=args.threads, device=args.device)
                rep_path.write_text(json.dumps(reports, indent=1) + "\n")
            minilm.write_readme(out, reports)
    return 0


def _llm(args, argv) -> int:
    import json
    from pathlib import Path

    from . import llm
    from .llama import SMOLLM2_Q4_1

    if args.llm_cmd == "score":
        folder = Path(args.heldout_dir) if args.heldout_dir else llm.HELDOUT_DIR
        try:
            recs = llm.read_heldout(args.task, folder)
            preds = llm.read_predictions(args.predictions)
            res = llm.score(args.task, preds, [r["answer"] for r in recs], llm.task_labels(args.task))
        except (ValueError, FileNotFoundError, KeyError) as e:
            print(f"riffle-train llm score: {e}", file=sys.stderr)
            return 2
        print(json.dumps(res))
    elif args.llm_cmd == "heldout":
        if args.write_committed:
            _, te, _ = llm.split(args.task, 10**9, args.heldout)
            print(llm.write_heldout(args.task, te, llm.HELDOUT_DIR))
        else:
            recs = llm.read_heldout(args.task)
            Path(args.out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs),
                                      encoding="utf-8")
    elif args.llm_cmd == "train":
        return _llm_train(args)
    elif args.llm_cmd == "prepare":
        for t in args.tasks.split(","):
            llm.dump_split(t, llm.Budget(train=args.train, heldout=args.heldout), Path(args.out))
    elif args.llm_cmd == "eval":
        import torch

        from .llama import base_model_id, llama_from_gguf
        if args.threads:
            torch.set_num_threads(args.threads)
        base = args.base or SMOLLM2_Q4_1
        try:
            recs = llm.read_heldout(args.task, Path(args.heldout_dir) if args.heldout_dir else llm.HELDOUT_DIR)
            recs = recs[: args.limit]
            model, _ = llama_from_gguf(base)
            model.to(args.device)
            if args.adapter:
                llm.load_adapter(model, args.adapter, base_model_id(base))
        except (ValueError, FileNotFoundError, KeyError) as e:
            print(f"riffle-train llm eval: {e}", file=sys.stderr)
            return 2
        tok = llm.tokenizer_from_gguf(base)
        texts = llm.generate_texts(model, tok, [r["messages"] for r in recs], llm.max_new_tokens(args.task), 32,
                                   args.autocast)
        if args.predictions:
            Path(args.predictions).write_text("".join(json.dumps({"id": r["id"], "text": t}, ensure_ascii=False) + "\n"
                                                      for r, t in zip(recs, texts)), encoding="utf-8")
        res = llm.score(args.task, texts, [r["answer"] for r in recs], llm.task_labels(args.task))
        print(json.dumps({"task": args.task, "adapter": args.adapter, "device": args.device,
                          "autocast": args.autocast, **res}))
    elif args.llm_cmd == "parity":
        from .llm_parity import run_parity
        run_parity(args.base or SMOLLM2_Q4_1, args.riffle, args.tasks.split(","), args.out, args.limit,
                   args.threads, command="python -m riffle_train " + " ".join(argv or sys.argv[1:]))
    elif args.llm_cmd == "memory":
        from .llm_memory import run_memory
        run_memory(str(args.base or SMOLLM2_Q4_1), args.methods.split(","), args.out, args.repeats, args.batch,
                   args.tokens, args.steps, command="python -m riffle_train " + " ".join(argv or sys.argv[1:]))
    elif args.llm_cmd == "ids":
        from .llm_ids import write_ids
        write_ids(args.base or SMOLLM2_Q4_1, args.out)
    elif args.llm_cmd == "fixture":
        from .llm_fixture import write_fixture
        write_fixture(args.out)
    else:
        comp = []
        p = Path(args.compatible_ids)
        if p.exists():
            comp = json.loads(p.read_text())["compatible_model_ids"]
        b = llm.Budget(train=args.train, heldout=args.heldout, steps=args.steps, batch=args.batch, lr=args.lr,
                       max_prompt=args.max_prompt, few_shot=args.few_shot, eval_batch=args.eval_batch,
                       blocks=None if args.blocks == "all" else tuple(int(x) for x in args.blocks.split(",")),
                       block_size=args.block_size, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha)
        command = "python -m riffle_train " + " ".join(argv if argv is not None else sys.argv[1:])
        llm.run_compare(args.base or SMOLLM2_Q4_1, args.tasks.split(","), args.methods.split(","), args.out, b,
                        device=args.device, compatible=comp, threads=args.threads, command=command,
                        keep_best=args.keep_best, note=args.note, prepared_dir=args.prepared)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def _llm_train(args) -> int:
    """``llm train``: bad input is one line on stderr and exit status 2."""
    import json

    import torch

    from . import gguf_io
    from . import llm_finetune as ft
    from .llama import base_model_id

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        blocks = None if args.blocks == "all" else tuple(int(x) for x in args.blocks.split(","))
    except ValueError:
        print(f"riffle-train llm train: --blocks {args.blocks!r} is not `all` or comma-separated indices",
              file=sys.stderr)
        return 2
    s = ft.Settings(method=args.method, block_size=args.block_size, blocks=blocks, epochs=args.epochs,
                    steps=args.steps, batch=args.batch, lr=args.lr, max_length=args.max_length,
                    validation_split=args.validation_split, eval_limit=args.eval_limit, seed=args.seed)
    try:
        ft.refuse_overwriting({"--out": args.out, "--report": args.report},
                              {"--base": args.base, "--data": args.data, "--validation": args.validation})
        comp = [base_model_id(p) for p in args.compatible]
        # Progress on stderr, the report alone on stdout.
        rep = ft.run_train(args.base, args.data, args.out, args.task, s, validation=args.validation,
                           compatible=comp, device=args.device,
                           log=lambda *a, **k: print(*a, file=sys.stderr, flush=True))
    except (ft.DataError, OSError) as e:
        print(f"riffle-train llm train: {e}", file=sys.stderr)
        return 2
    text = json.dumps(rep, ensure_ascii=False)
    if args.report:
        try:
            gguf_io.write_replacing(args.report, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
        except OSError as e:
            print(f"riffle-train llm train: --report: {e}", file=sys.stderr)
            return 2
    print(text)
    return 0
