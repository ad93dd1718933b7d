"""`riffle serve` through OpenAI's official Python client (run by scripts/test-serve).

    python openai_client.py RIFFLE_BIN ENCODER_URL ENCODER.gguf [LLM_URL]

ENCODER_URL serves MiniLM with the adapter task `gamma` resident; LLM_URL (optional)
serves SmolLM2 with the adapters `alpha` and `beta`. Prints one line per check and
`N passed, M failed`; exits 1 on any failure.
"""
import json
import struct
import subprocess
import sys
import traceback

import openai

RIFFLE, ENC_URL, ENC_FILE = sys.argv[1], sys.argv[2], sys.argv[3]
LLM_URL = sys.argv[4] if len(sys.argv) > 4 else None
results = []


def check(name):
    def wrap(f):
        try:
            f()
            results.append((name, None))
            print(f"ok   {name}")
        except Exception as e:  # noqa: BLE001 - every failure is reported
            results.append((name, e))
            print(f"FAIL {name}: {e!r}")
            traceback.print_exc()
        return f
    return wrap


def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)


def f32(v):
    """The values as float32 (JSON carries the shortest decimal of each float32)."""
    return list(struct.unpack(f"<{len(v)}f", struct.pack(f"<{len(v)}f", *v)))


def riffle_run(text, adapter=None):
    args = [RIFFLE, "run", "--model", ENC_FILE, "--text", text, "--json"]
    if adapter:
        args += ["--adapter", adapter, "--task", "gamma"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["output"]


enc = client(ENC_URL)


@check("models.list names the base and the resident adapter")
def _():
    ids = [m.id for m in enc.models.list().data]
    assert ids[0] == "minilm-f32" and "gamma" in ids, ids


@check("embeddings.create (base64, the client's default) equals riffle run --text")
def _():
    r = enc.embeddings.create(model="minilm-f32", input=["hello world", "adapters per request"])
    assert len(r.data) == 2
    for d, text in zip(r.data, ["hello world", "adapters per request"]):
        assert f32(d.embedding) == f32(riffle_run(text)), text
    assert r.usage.prompt_tokens > 0


@check("embeddings.create with encoding_format=float and an adapter")
def _():
    r = enc.embeddings.create(model="gamma", input="the adapter is chosen per request",
                              encoding_format="float")
    adapter = sys.argv[5] if len(sys.argv) > 5 else None
    if adapter:
        want = riffle_run("the adapter is chosen per request", adapter)
        assert f32(r.data[0].embedding) == f32(want)
    base = enc.embeddings.create(model="minilm-f32", input="the adapter is chosen per request")
    assert base.data[0].embedding != r.data[0].embedding


@check("an unknown model is openai.NotFoundError with code model_not_found")
def _():
    try:
        enc.embeddings.create(model="nope", input="x")
    except openai.NotFoundError as e:
        assert e.code == "model_not_found", e.code
    else:
        raise AssertionError("no error")


@check("a bad request is openai.BadRequestError")
def _():
    try:
        enc.chat.completions.create(model="minilm-f32", messages=[{"role": "user", "content": "x"}])
    except openai.BadRequestError as e:
        assert e.code == "unsupported_model", e.code
    else:
        raise AssertionError("no error")


if LLM_URL:
    llm = client(LLM_URL)
    prompt = [1, 504, 3458, 282, 1345, 3756, 42]

    @check("completions: streaming and non-streaming give the same greedy tokens per adapter")
    def _():
        seen = []
        for model in ["base", "alpha", "beta"]:
            r = llm.completions.create(model=model, prompt=prompt, max_tokens=5, temperature=0,
                                       extra_body={"return_tokens": True})
            ids = r.choices[0].model_extra["tokens"]
            assert len(ids) == 5 and r.usage.completion_tokens == 5, r
            assert r.usage.prompt_tokens == len(prompt)
            chunks = list(llm.completions.create(model=model, prompt=prompt, max_tokens=5,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True},
                                                 extra_body={"return_tokens": True}))
            last = [c for c in chunks if c.choices][-1]
            assert last.choices[0].finish_reason == "length"
            assert last.choices[0].model_extra["tokens"] == ids
            assert "".join(c.choices[0].text for c in chunks if c.choices) == r.choices[0].text
            assert chunks[-1].usage.completion_tokens == 5
            seen.append(ids)
        assert seen[0] != seen[1] and seen[1] != seen[2], seen

    @check("chat.completions: stream equals non-stream (or the build has no tokenizer yet)")
    def _():
        msgs = [{"role": "user", "content": "Name a colour."}]
        try:
            r = llm.chat.completions.create(model="alpha", messages=msgs, max_tokens=12,
                                            temperature=0)
        except openai.APIStatusError as e:
            assert e.status_code == 501 and e.code == "no_tokenizer", e
            print("note: this build has no byte-level BPE tokenizer; chat checked as refused")
            return
        text = r.choices[0].message.content
        assert r.choices[0].message.role == "assistant"
        stream = llm.chat.completions.create(model="alpha", messages=msgs, max_tokens=12,
                                             temperature=0, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text

    @check("logprobs parse into the client's types, streamed or not")
    def _():
        msgs = [{"role": "user", "content": "Name a colour."}]
        try:
            r = llm.chat.completions.create(model="beta", messages=msgs, max_tokens=6,
                                            temperature=0, logprobs=True, top_logprobs=3)
        except openai.APIStatusError as e:
            assert e.status_code == 501 and e.code == "no_tokenizer", e
            return
        content = r.choices[0].logprobs.content
        assert len(content) == r.usage.completion_tokens, r
        assert b"".join(bytes(t.bytes) for t in content).decode() == r.choices[0].message.content
        for t in content:
            assert len(t.top_logprobs) == 3 and t.top_logprobs[0].logprob == t.logprob <= 0
        stream = llm.chat.completions.create(model="beta", messages=msgs, max_tokens=6,
                                             temperature=0, logprobs=True, top_logprobs=3,
                                             stream=True)
        streamed = [t for c in stream if c.choices and c.choices[0].logprobs
                    for t in c.choices[0].logprobs.content]
        assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in content]
        c = llm.completions.create(model="base", prompt=prompt, max_tokens=4, temperature=0,
                                   logprobs=2)
        lp = c.choices[0].logprobs
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4, lp
        # lm-eval-harness's log-likelihood request: the prompt scored, one token generated.
        e = llm.completions.create(model="base", prompt=[prompt], max_tokens=1, logprobs=1,
                                   echo=True, temperature=0, seed=1234)
        scored = e.choices[0].logprobs
        assert len(scored.token_logprobs) == len(prompt) + 1, scored
        assert scored.token_logprobs[0] is None and scored.top_logprobs[0] is None
        assert all(v <= 0 for v in scored.token_logprobs[1:])
        assert all(max(top.values()) == v for top, v in zip(lp.top_logprobs, lp.token_logprobs))
        j = llm.chat.completions.create(model="base", messages=msgs, max_tokens=40,
                                        temperature=0, response_format={"type": "json_object"})
        if j.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(j.choices[0].message.content), dict), j
        try:
            llm.chat.completions.create(
                model="base", messages=msgs, max_tokens=2,
                response_format={"type": "json_schema",
                                 "json_schema": {"name": "x", "schema": {"type": "object"}}})
        except openai.BadRequestError as e:
            assert e.code == "unsupported_parameter", e.code
        else:
            raise AssertionError("a JSON schema was accepted and ignored")

    @check("max_tokens past the context is openai.BadRequestError")
    def _():
        try:
            llm.completions.create(model="base", prompt=prompt, max_tokens=10**6)
        except openai.BadRequestError as e:
            assert e.code == "invalid_value", e.code
        else:
            raise AssertionError("no error")

failed = sum(1 for _, e in results if e)
print(f"{len(results) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
