"""PEFT importer (the riffle CLI's ``import-peft``, run by ``peft_import.import_peft``): real PEFT
folders (tests/data/peft, made by PEFT 0.21.2, 0.17.1 and 0.15.2 on all-MiniLM-L6-v2) are
imported and riffle's float64 forward of the written GGUF is compared with PEFT's own outputs,
and the CLI's own forward too. Skipped when the CLI is not built. A live test with PEFT itself runs
when ``peft`` is importable (the env of ``train/peft-env``) and is skipped otherwise.
"""

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from riffle_train import gguf_io, minilm, peft_import
from riffle_train.layers import adapted_modules, cayley
from riffle_train.peft_import import ImportError_, import_peft

# case: (expected method, b, m, max |riffle f64 - PEFT f64|)  (None: Cayley-Neumann, see below)
CASES = {
    "minilm-oft-exact": ("oft", 8, 1, 1e-12),  # parameters copied: float64 agreement
    "minilm-oft-old": ("oft", 8, 1, 1e-6),  # (A - A^T)/2 rounded to f32 once
    "minilm-boft": ("boft", 4, 2, 1e-6),
    "minilm-oft-neumann": ("oft", 8, 1, None),
    "minilm-oft-neumann-0.17": ("oft", 8, 1, None),
}


@pytest.fixture(scope="session")
def imported(minilm_base, tmp_path_factory):
    from pathlib import Path

    if peft_import.riffle_cli() is None:
        pytest.skip("the riffle CLI is not built (cargo build --release -p riffle-cli): it does the import")
    fix = Path(__file__).resolve().parents[2] / "tests" / "data" / "peft"
    out = tmp_path_factory.mktemp("imported")
    done = {}
    for case in CASES:
        rep = import_peft(fix / case, minilm_base, out / f"{case}.gguf")
        done[case] = (rep, out / f"{case}.gguf", json.loads((fix / case / "expected.json").read_text()))
    return done


def _neumann_blocks(p_riffle: torch.Tensor, b: int, terms: int, last: float) -> torch.Tensor:
    """PEFT's operator R_series(S_peft)^T with S_peft = -skew(p_riffle), float64."""
    s = peft_import.skew(-p_riffle.detach().double().numpy(), b)
    r = peft_import.peft_neumann_series(s, terms, last)
    return torch.from_numpy(np.ascontiguousarray(np.swapaxes(r, -1, -2)))


@pytest.mark.parametrize("case", list(CASES))
def test_import_matches_peft(case, imported, minilm_base):
    method, b, m, tol = CASES[case]
    rep, path, exp = imported[case]
    kv, t, types = gguf_io.read_tensors(path)
    assert kv["adapter.orthogonal.method"] == method and rep.block_size == b and rep.factor_count == m
    assert kv["adapter.base_model_id"] == gguf_io.read_kv_only(minilm_base)["riffle.model_id"]
    assert kv["riffle.data_crc32"] == gguf_io.verify_span(path)["data_crc32"]
    assert all(v == "F32" for v in types.values())
    got = peft_import.bert_outputs(minilm_base, path, exp["ids"])
    ref64, ref32 = np.array(exp["pooled_f64"]), np.array(exp["pooled_f32"])
    if tol is not None:
        assert np.abs(got - ref64).max() <= tol
        assert np.abs(got - ref32).max() <= 1e-4
    else:
        # Cayley-Neumann: riffle is exact, PEFT truncated; the gap is bounded by the reported
        # per-block truncation error (measured: 6e-5 and 1.5e-4 for errors 2.9e-4 and 3.7e-4)
        assert rep.neumann and kv["adapter.peft.cayley_neumann_terms"] == 5
        assert 0 < rep.truncation_error < 1e-3
        gap = np.abs(got - ref64).max()
        assert 1e-7 < gap <= rep.truncation_error
        assert rep.neumann_last_coefficient == (2.0 if case.endswith("0.17") else 1.0)


@pytest.mark.parametrize("case", ["minilm-oft-neumann", "minilm-oft-neumann-0.17"])
def test_neumann_gap_is_only_the_truncation(case, imported, minilm_base):
    """Replacing riffle's exact blocks by PEFT's series (built from the imported, negated
    parameters) reproduces PEFT in float64: the sign and the series are right, and what is
    left is the truncation the importer reports."""
    rep, path, exp = imported[case]
    enc, _ = minilm.encoder_from_gguf(minilm_base)
    minilm.apply_text_adapter(enc, path)
    enc = enc.double().eval()
    for _, mod in adapted_modules(enc):
        blk = _neumann_blocks(mod.oft_in.params[0], rep.block_size, rep.neumann_terms, rep.neumann_last_coefficient)
        mod.oft_in.blocks = (lambda blk=blk: [blk])
    with torch.no_grad():
        got = np.array([enc(torch.tensor([x]), torch.ones(1, len(x), dtype=torch.long))[0].numpy()
                        for x in exp["ids"]])
    assert np.abs(got - np.array(exp["pooled_f64"])).max() < 1e-10


@pytest.mark.parametrize("case", list(CASES))
def test_rust_cli_matches_peft(case, imported, minilm_base, repo):
    exe = repo / "target" / "release" / "riffle"
    if not exe.exists():
        pytest.skip("target/release/riffle is not built (cargo build --release -p riffle-cli)")
    rep, path, exp = imported[case]
    for text, ref in zip(exp["texts"], exp["pooled_f32"]):
        r = subprocess.run([str(exe), "run", "--model", str(minilm_base), "--adapter", str(path), "--text", text,
                            "--json"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        out = np.array(json.loads(r.stdout)["output"])  # the CLI prints the L2-normalised embedding
        ref = np.array(ref) / np.linalg.norm(ref)
        assert np.abs(out - ref).max() <= (1e-4 if CASES[case][3] is not None else rep.truncation_error)


def test_rust_digits_fixtures(repo, tmp_path, cli):
    """The Rust importer's PEFT 0.21 folders on the digits MLP (cli/tests/data/peft) import the same way."""
    d = repo / "cli" / "tests" / "data" / "peft"
    if not d.exists():
        pytest.skip("cli/tests/data/peft not present")
    base = repo / "models" / "digits" / "mlp.gguf"
    for case, tol in (("oft-exact", 1e-5), ("boft", 1e-5), ("oft-neumann", 1e-3)):
        exp = json.loads((d / case / "expected.json").read_text())
        rep = import_peft(d / case, base, tmp_path / f"{case}.gguf")
        got = peft_import.mlp_outputs(base, tmp_path / f"{case}.gguf", np.array(exp["inputs"]))
        assert np.abs(got - np.array(exp["outputs"])).max() < tol, case
    assert rep.neumann and rep.truncation_error < 1e-3


def test_sign_conventions():
    """PEFT's exact Cayley R = (I - S)(I + S)^{-1}, applied as x @ R, is riffle's C(S)."""
    rng = np.random.default_rng(0)
    p = rng.normal(0, 0.5, (3, 28))
    s = peft_import.skew(p, 8)
    eye = np.eye(8)
    r_peft = np.array([(eye - si) @ np.linalg.inv(eye + si) for si in s])
    ours = cayley(torch.from_numpy(p), 8).numpy()
    assert np.abs(np.swapaxes(r_peft, -1, -2) - ours).max() < 1e-12
    # the Cayley-Neumann series approximates the other sign: R_series(S)^T ~ C(-S)
    small = peft_import.skew(p * 0.01, 8)
    for last in (1.0, 2.0):
        series = peft_import.peft_neumann_series(small, 5, last)
        assert np.abs(np.swapaxes(series, -1, -2) - peft_import.cayley(-small)).max() < 1e-5
    # PEFT 0.21's five terms: I + 2S + 2S^2 + 2S^3 + S^4
    s1 = small[0]
    want = eye + 2 * s1 + 2 * s1 @ s1 + 2 * s1 @ s1 @ s1 + s1 @ s1 @ s1 @ s1
    assert np.abs(peft_import.peft_neumann_series(s1, 5, 1.0) - want).max() < 1e-15
    assert peft_import.neumann_last_coefficient("0.21.2") == 1.0
    assert peft_import.neumann_last_coefficient("0.17.1") == 2.0
    assert peft_import.neumann_last_coefficient(None) == 2.0
    # packing a full block keeps its skew part: gs-math.md section 2
    a = rng.normal(size=(2, 4, 4))
    assert np.allclose(peft_import.skew(peft_import.pack_skew_part(a), 4), (a - np.swapaxes(a, -1, -2)) / 2)


def _write_folder(path, cfg, tensors):
    from safetensors.numpy import save_file

    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()},
              str(path / "adapter_model.safetensors"))
    return path


@pytest.fixture
def cli():
    if peft_import.riffle_cli() is None:
        pytest.skip("the riffle CLI is not built (cargo build --release -p riffle-cli): it does the import")


def test_refusals(repo, tmp_path, cli):
    base = repo / "models" / "digits" / "mlp.gguf"
    ok = {"peft_type": "OFT", "peft_version": "0.21.2", "use_cayley_neumann": False, "bias": "none"}
    p8 = np.full((8, 28), 0.01)
    with pytest.raises(ImportError_, match="LORA"):
        import_peft(_write_folder(tmp_path / "lora", dict(ok, peft_type="LORA"), {"x": p8}), base, tmp_path / "o")
    with pytest.raises(ImportError_, match="bias"):
        import_peft(_write_folder(tmp_path / "bias", dict(ok, bias="all"),
                                  {"base_model.model.layers.0.oft_R.weight": p8}), base, tmp_path / "o")
    with pytest.raises(ImportError_, match="matches no weight"):
        import_peft(_write_folder(tmp_path / "nomod", ok, {"base_model.model.layers.9.oft_R.weight": p8}), base,
                    tmp_path / "o")
    with pytest.raises(ImportError_, match="should be"):
        import_peft(_write_folder(tmp_path / "shape", ok, {"base_model.model.layers.0.oft_R.weight": np.zeros((8, 27))}),
                    base, tmp_path / "o")
    big = dict(ok, use_cayley_neumann=True)
    with pytest.raises(ImportError_, match="truncation|Cayley-Neumann"):
        import_peft(_write_folder(tmp_path / "big", big, {"base_model.model.layers.0.oft_R.weight": np.full((8, 28), 0.2)}),
                    base, tmp_path / "o")
    head = {"base_model.model.layers.0.oft_R.weight": p8, "base_model.model.layers.2.weight": np.zeros((2, 64)),
            "base_model.model.layers.2.bias": np.zeros(2)}
    with pytest.raises(ImportError_, match="labels"):
        import_peft(_write_folder(tmp_path / "head", ok, head), base, tmp_path / "o")
    rep = import_peft(tmp_path / "head", base, tmp_path / "head.gguf", task="parity", labels=["even", "odd"])
    kv, t, _ = gguf_io.read_tensors(tmp_path / "head.gguf")
    assert kv["adapter.labels"] == ["even", "odd"] and t["layers.2.weight"].shape == (2, 64)
    assert sorted(rep.heads) == ["layers.2.bias", "layers.2.weight"] and not rep.neumann
    # block_share: one row stands for every block
    shared = {"base_model.model.layers.0.oft_R.weight": p8[:1] * 3}
    import_peft(_write_folder(tmp_path / "share", ok, shared), base, tmp_path / "share.gguf")
    _, t, _ = gguf_io.read_tensors(tmp_path / "share.gguf")
    assert t["layers.0.weight.oft_in.0"].shape == (8, 28) and np.allclose(t["layers.0.weight.oft_in.0"], 0.03)


# --------------------------------------------------------------------------- live PEFT


def _tiny_bert(tmp_path):
    """A random transformers BertModel and its riffle GGUF conversion (same weights)."""
    transformers = pytest.importorskip("transformers", reason="transformers is not installed: use train/peft-env")
    from safetensors.torch import save_file

    cfg = transformers.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64, type_vocab_size=2)
    torch.manual_seed(0)
    model = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    src = tmp_path / "hf"
    src.mkdir()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(35)]
    (src / "vocab.txt").write_text("\n".join(words) + "\n")
    (src / "config.json").write_text(json.dumps(cfg.to_dict()))
    (src / "tokenizer.json").write_text(json.dumps({"added_tokens": [{"content": w, "special": True}
                                                                     for w in words[:5]]}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(src / "model.safetensors"))
    minilm.convert(tmp_path / "gguf", src, outtypes=("f32",), log=lambda *a: None)
    return model, tmp_path / "gguf" / "minilm-f32.gguf"


def _peft_pooled(model, ids):
    with torch.no_grad():
        return np.array([model(input_ids=torch.tensor([x]), attention_mask=torch.ones(1, len(x), dtype=torch.long))
                         .last_hidden_state[0].mean(0).numpy() for x in ids])


LIVE = {
    "oft-exact": lambda p: p.OFTConfig(oft_block_size=8, r=0, use_cayley_neumann=False,
                                       target_modules=["query", "key", "value", "dense"], init_weights=False),
    "oft-exact-shared": lambda p: p.OFTConfig(oft_block_size=4, r=0, use_cayley_neumann=False, block_share=True,
                                              target_modules=["query", "value"], init_weights=False),
    "oft-neumann": lambda p: p.OFTConfig(oft_block_size=4, r=0, target_modules=["key", "dense"], init_weights=False),
    "oft-coft": lambda p: p.OFTConfig(oft_block_size=4, r=0, use_cayley_neumann=False, coft=True, eps=1.0,
                                      target_modules=["query", "dense"], init_weights=False),
    "boft-1": lambda p: p.BOFTConfig(boft_block_size=4, target_modules=["query", "dense"], init_weights=False),
}


@pytest.mark.parametrize("case", list(LIVE))
def test_live_peft(case, tmp_path, cli):
    peft = pytest.importorskip("peft", reason="peft is not installed: PY=$(train/peft-env) runs this test")
    model, base = _tiny_bert(tmp_path)
    pm = peft.get_peft_model(model, LIVE[case](peft))
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for n, prm in pm.named_parameters():
            if prm.requires_grad:
                prm.copy_((1 + 0.2 * torch.randn(prm.shape, generator=g)) if "boft_s" in n
                          else (0.01 if "neumann" in case else 0.2) * torch.randn(prm.shape, generator=g))
    pm.eval()
    pm.save_pretrained(str(tmp_path / "peft"))  # before any forward: coft projects in place when run
    ids = [[2, 7, 8, 9, 3], [2, 11, 3], [2] + list(range(5, 40)) + [3]]
    ref = _peft_pooled(pm.double(), ids)
    rep = import_peft(tmp_path / "peft", base, tmp_path / "a.gguf")
    got = peft_import.bert_outputs(base, tmp_path / "a.gguf", ids)
    if rep.neumann:
        assert np.abs(got - ref).max() <= rep.truncation_error
    else:
        assert np.abs(got - ref).max() < 1e-6
    if case == "oft-coft":  # the projection was active: the stored parameters were shrunk on import
        from safetensors.numpy import load_file

        raw = load_file(str(tmp_path / "peft" / "adapter_model.safetensors"))
        _, t, _ = gguf_io.read_tensors(tmp_path / "a.gguf")
        k = next(k for k in raw if "layer.0.attention.self.query" in k)
        assert np.abs(t["blk.0.attn_q.weight.oft_in.0"]).max() < 0.5 * np.abs(raw[k]).max()
    shutil.rmtree(tmp_path / "peft")
