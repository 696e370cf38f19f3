#!/usr/bin/env python3
"""build/server end to end, on loopback: the official openai client (chat and completions, streaming and
not, n, stop, seed), greedy text equal to build/generate's, logprobs equal to the log-softmax of
build/generate --dump-logits, a table of malformed requests, oversize bodies, header floods, slow
clients, a full queue, an exhausted KV pool, the API key, and a client that leaves mid-stream (its
sequence removed and every KV block back in the pool, as /health counts them).
Each server must exit cleanly on SIGTERM (exit 0, no sanitizer report).  Ends with "N passed, N failed".

  test_server.py --build DIR --model SMOLLM2.gguf [--quick]   (--quick: tiny model only)"""
import argparse, http.client, json, math, os, signal, socket, struct, subprocess, sys, threading, time

import openai

ARGS = None
PASSED = FAILED = 0
TESTDATA = os.environ.get("MLLM_TESTDATA", "../shared/testdata")
TINY = os.path.join(TESTDATA, "tiny/models/tiny-llama-Q8_0.gguf")


def check(cond, what):
    global PASSED, FAILED
    if cond:
        PASSED += 1
        print("ok   " + what)
    else:
        FAILED += 1
        print("FAIL " + what)
    sys.stdout.flush()
    return cond


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server:
    """build/server on a free loopback port; stop() checks that it exits cleanly."""

    def __init__(self, model, *extra):
        self.port = free_port()
        self.err_path = os.path.join(ARGS.build, "test_server.%d.log" % self.port)
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen([os.path.join(ARGS.build, "server"), "-m", model, "--port", str(self.port),
                                      "-t", "1"] + list(extra), stdout=self.err, stderr=self.err)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if self.get("/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
            if self.proc.poll() is not None:
                break
        self.client = openai.OpenAI(base_url="http://127.0.0.1:%d/v1" % self.port, api_key="none", max_retries=0,
                                    timeout=120)

    def request(self, method, path, body=None, headers=None, timeout=60):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, obj, headers=None):
        body = obj if isinstance(obj, (bytes, str)) else json.dumps(obj)
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        return self.request("POST", path, body, h)

    def health(self):
        return json.loads(self.get("/health")[1])

    def wait_idle(self, seconds=10):
        """Until no request runs or waits and every KV block is free again; the last /health."""
        deadline = time.time() + seconds
        while True:
            h = self.health()
            if (h["requests_running"] == 0 and h["requests_waiting"] == 0 and h["kv_blocks_free"] == h["kv_blocks_total"]) \
                    or time.time() > deadline:
                return h
            time.sleep(0.02)

    def stop(self, name):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = "hung"
        self.err.close()
        log = open(self.err_path, errors="replace").read()
        bad = [l for l in log.splitlines() if "Sanitizer" in l or "runtime error" in l]
        check(rc == 0 and not bad, "%s: server exits cleanly on SIGTERM (rc %s)%s" % (name, rc, "".join("\n    " + l for l in bad[:5])))
        if rc == 0 and not bad:
            os.unlink(self.err_path)


def generate(model, prompt, n, chat=False):
    """build/generate's greedy text (its stdout ends with one newline it adds)."""
    cmd = [os.path.join(ARGS.build, "generate"), "-m", model, "-p", prompt, "-n", str(n), "--temp", "0", "-t", "1"]
    out = subprocess.run(cmd + (["--chat"] if chat else []), capture_output=True, timeout=300).stdout
    return out[:-1].decode("utf-8", "replace") if out.endswith(b"\n") else None


def stream_text(chunks, chat):
    texts, finish = {}, {}
    for ch in chunks:
        for c in ch.choices:
            piece = (c.delta.content if chat else c.text) or ""
            texts[c.index] = texts.get(c.index, "") + piece
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    return texts, finish


# ---------------------------------------------------------------- the openai client
def openai_suite(srv, model, name, max_tokens, slow):
    cl, mname = srv.client, "m"
    msgs = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Name three colors."}]
    prompt = "The capital of France is"
    # non-streaming
    r = cl.completions.create(model=mname, prompt=prompt, max_tokens=max_tokens, temperature=0)
    check(r.object == "text_completion" and len(r.choices) == 1 and r.choices[0].finish_reason in ("stop", "length")
          and r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= max_tokens
          and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens,
          "%s: completion (usage %s, finish %s)" % (name, r.usage, r.choices[0].finish_reason))
    comp_text = r.choices[0].text
    c = cl.chat.completions.create(model=mname, messages=msgs, max_tokens=max_tokens, temperature=0)
    check(c.object == "chat.completion" and c.choices[0].message.role == "assistant" and c.usage.completion_tokens > 0,
          "%s: chat completion (%r)" % (name, c.choices[0].message.content[:40]))
    chat_text = c.choices[0].message.content
    # streaming gives the same text, in several chunks where tokens come slower than the writer sends them
    # (the tiny model makes all its tokens in well under a millisecond: they may leave in one chunk)
    chunks = list(cl.completions.create(model=mname, prompt=prompt, max_tokens=max_tokens, temperature=0, stream=True))
    t, f = stream_text(chunks, False)
    check(t.get(0) == comp_text and f.get(0) == r.choices[0].finish_reason and len(chunks) > (2 if slow else 1),
          "%s: streamed completion equals the non-streamed one (%d chunks)" % (name, len(chunks)))
    chunks = list(cl.chat.completions.create(model=mname, messages=msgs, max_tokens=max_tokens, temperature=0, stream=True,
                                             stream_options={"include_usage": True}))
    t, f = stream_text(chunks, True)
    check(t.get(0) == chat_text and f.get(0) == c.choices[0].finish_reason and chunks[-1].usage is not None
          and chunks[-1].usage.completion_tokens == c.usage.completion_tokens,
          "%s: streamed chat equals the non-streamed one, usage in the last chunk" % name)
    # seed: same seed, same text; another seed, another text
    kw = dict(model=mname, prompt=prompt, max_tokens=max_tokens, temperature=1.0, extra_body={"top_k": 0})
    a = cl.completions.create(seed=1234, **kw).choices[0].text
    b = cl.completions.create(seed=1234, **kw).choices[0].text
    others = [cl.completions.create(seed=s, **kw).choices[0].text for s in (1, 2, 3)]
    check(a == b and any(o != a for o in others), "%s: same seed same text, other seeds differ (%r)" % (name, a[:30]))
    sa = "".join(stream_text(cl.completions.create(seed=1234, stream=True, **kw), False)[0].values())
    check(sa == a, "%s: a seeded stream gives the seeded text" % name)
    # n: forks of one prompt; greedy forks agree, sampled ones (seed + i) differ
    r = cl.completions.create(model=mname, prompt=prompt, max_tokens=max_tokens, temperature=0, n=3)
    check(len(r.choices) == 3 and all(ch.text == comp_text for ch in r.choices) and sorted(ch.index for ch in r.choices) == [0, 1, 2]
          and r.usage.prompt_tokens == r.usage.total_tokens - r.usage.completion_tokens,
          "%s: n=3 greedy: three equal choices" % name)
    r = cl.chat.completions.create(model=mname, messages=msgs, max_tokens=max_tokens, temperature=1.0, n=3, seed=7)
    texts = [ch.message.content for ch in r.choices]
    check(len(texts) == 3 and len(set(texts)) > 1, "%s: n=3 sampled: the choices differ" % name)
    t, f = stream_text(cl.chat.completions.create(model=mname, messages=msgs, max_tokens=max_tokens, temperature=1.0, n=3,
                                                  seed=7, stream=True), True)
    check([t.get(i) for i in range(3)] == texts and len(f) == 3, "%s: n=3 streamed equals n=3 not streamed (seeded)" % name)
    choice1 = cl.chat.completions.create(model=mname, messages=msgs, max_tokens=max_tokens, temperature=1.0, seed=8)
    check(choice1.choices[0].message.content == texts[1], "%s: choice i of n uses seed + i" % name)
    # stop strings, including ones that span token boundaries
    if len(comp_text) >= 8:
        for a_, b_ in ((2, 7), (len(comp_text) // 2, len(comp_text) // 2 + 3)):
            stop = comp_text[a_:b_]
            want = comp_text[:comp_text.find(stop)]
            r = cl.completions.create(model=mname, prompt=prompt, max_tokens=max_tokens, temperature=0, stop=[stop, "\u00a7never"])
            s_t, s_f = stream_text(cl.completions.create(model=mname, prompt=prompt, max_tokens=max_tokens, temperature=0,
                                                         stop=stop, stream=True), False)
            check(r.choices[0].text == want and r.choices[0].finish_reason == "stop" and s_t.get(0) == want and s_f.get(0) == "stop",
                  "%s: stop %r cuts the text (%r), streamed too" % (name, stop, want[-20:]))
    else:
        check(False, "%s: completion too short to test stop strings: %r" % (name, comp_text))
    # greedy through the server == build/generate
    g = generate(model, prompt, max_tokens)
    check(g == comp_text, "%s: greedy completion equals build/generate's\n    server   %r\n    generate %r" % (name, comp_text, g))
    g = generate(model, "Name three colors.", max_tokens, chat=True)
    c1 = cl.chat.completions.create(model=mname, messages=[{"role": "user", "content": "Name three colors."}], max_tokens=max_tokens,
                                    temperature=0)
    check(g == c1.choices[0].message.content, "%s: greedy chat equals build/generate --chat's\n    server   %r\n    generate %r"
          % (name, c1.choices[0].message.content, g))
    ms = cl.models.list()
    check(len(ms.data) == 1 and ms.data[0].object == "model", "%s: /v1/models lists the model" % name)


# ---------------------------------------------------------------- logprobs
def reference_logprobs(model, prompt):
    """The independent side: build/generate --dump-logits writes the logits that decide the first token
    after prompt; their log-softmax in float64, highest first."""
    path = os.path.join(ARGS.build, "test_server.logits.%d" % os.getpid())
    subprocess.run([os.path.join(ARGS.build, "generate"), "-m", model, "-p", prompt, "-t", "1", "--dump-logits", path],
                   check=True, capture_output=True, timeout=300)
    with open(path, "rb") as f:
        data = f.read()
    os.unlink(path)
    logits = struct.unpack("<%df" % (len(data) // 4), data)
    mx = max(logits)
    lse = mx + math.log(math.fsum(math.exp(x - mx) for x in logits))
    return sorted((x - lse for x in logits), reverse=True)


def close(a, b, tol=2e-3):
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b))


def logprobs_suite(srv, model, name):
    """Greedy completion with logprobs=5: at every position the sampled token's logprob and the 5 best
    must equal the log-softmax of build/generate's logits for the prompt plus the text so far (each
    position checked where that text tokenizes back to the same tokens: the top token then matches).
    Chat: the streamed logprobs equal the non-streamed ones, and the tokens' bytes spell the text."""
    cl, prompt, n = srv.client, "The capital of France is", 4
    r = cl.completions.create(model="m", prompt=prompt, max_tokens=n, temperature=0, logprobs=5)
    lp = r.choices[0].logprobs
    check(len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == r.usage.completion_tokens
          and "".join(lp.tokens) == r.choices[0].text,
          "%s: completion logprobs: one entry per token, the tokens spell the text (%r)" % (name, lp.tokens))
    checked = 0
    for j in range(len(lp.tokens)):
        ref = reference_logprobs(model, prompt + "".join(lp.tokens[:j]))
        top = sorted(lp.top_logprobs[j].values(), reverse=True)
        if j and abs(ref[0] - lp.token_logprobs[j]) > 2e-3:
            continue   # the text retokenizes differently: not the same context as the server's
        checked += 1
        check(abs(lp.token_logprobs[j] - ref[0]) <= 2e-3 and close(top, ref[:5]) and max(lp.top_logprobs[j], key=lp.top_logprobs[j].get) == lp.tokens[j],
              "%s: token %d %r: logprob %.4f, top 5 %s equal build/generate's log-softmax %s"
              % (name, j, lp.tokens[j], lp.token_logprobs[j], ["%.4f" % x for x in top], ["%.4f" % x for x in ref[:5]]))
    check(checked >= 2, "%s: %d positions checked against build/generate (at least 2)" % (name, checked))
    msgs = [{"role": "user", "content": "Name three colors."}]
    c = cl.chat.completions.create(model="m", messages=msgs, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3)
    content = c.choices[0].logprobs.content
    streamed = []
    for ch in cl.chat.completions.create(model="m", messages=msgs, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3, stream=True):
        for x in ch.choices:
            if x.logprobs and x.logprobs.content:
                streamed += x.logprobs.content
    check(len(content) == c.usage.completion_tokens - (c.choices[0].finish_reason == "stop")
          and bytes(b for t in content for b in t.bytes).decode("utf-8", "replace") == c.choices[0].message.content
          and all(len(t.top_logprobs) == 3 and t.top_logprobs[0].logprob == t.logprob and t.top_logprobs[0].token == t.token
                  and t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob for t in content),
          "%s: chat logprobs: bytes spell the text, greedy token first of 3 descending alternatives" % name)
    check([(t.token, t.logprob, [a.logprob for a in t.top_logprobs]) for t in streamed]
          == [(t.token, t.logprob, [a.logprob for a in t.top_logprobs]) for t in content],
          "%s: streamed chat logprobs equal the non-streamed ones (%d tokens)" % (name, len(streamed)))


# ---------------------------------------------------------------- bad input
def malformed_table(srv):
    """Every row: (what, path, body, expected status, text in the error message).  None of them may
    disturb the server; an ordinary request works after all of them."""
    C, P = "/v1/completions", "/v1/chat/completions"
    big = "word " * 3000
    rows = [
        ("empty body", C, b"", 400, "JSON"),
        ("not JSON", C, b"{prompt: hi}", 400, "JSON"),
        ("truncated JSON", C, b'{"prompt": "hi"', 400, "JSON"),
        ("trailing garbage", C, b'{"prompt": "hi"} x', 400, "after"),
        ("array body", C, b'["hi"]', 400, "object"),
        ("deep nesting", C, b"[" * 5000 + b"]" * 5000, 400, "JSON"),
        ("NUL inside", C, b'{"prompt": "hi"}\x00', 400, "after"),
        ("missing prompt", C, {"max_tokens": 4}, 400, "prompt"),
        ("prompt number", C, {"prompt": 5}, 400, "prompt"),
        ("prompt two strings", C, {"prompt": ["a", "b"]}, 400, "prompt"),
        ("prompt bad token id", C, {"prompt": [1, 2, 999999]}, 400, "token"),
        ("prompt negative token id", C, {"prompt": [1, -2]}, 400, "token"),
        ("prompt fractional token id", C, {"prompt": [1.5]}, 400, "token"),
        ("prompt invalid UTF-8", C, b'{"prompt": "a\xff\xfeb"}', 400, "UTF-8"),
        ("prompt overlong UTF-8", C, b'{"prompt": "\xc0\xaf"}', 400, "UTF-8"),
        ("prompt lone surrogate escape", C, b'{"prompt": "\\ud800x"}', 400, ""),
        ("prompt longer than the context", C, {"prompt": big}, 400, "context"),
        ("max_tokens string", C, {"prompt": "hi", "max_tokens": "4"}, 400, "max_tokens"),
        ("max_tokens negative", C, {"prompt": "hi", "max_tokens": -1}, 400, "max_tokens"),
        ("max_tokens zero", C, {"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
        ("max_tokens huge", C, b'{"prompt": "hi", "max_tokens": 1e300}', 400, "max_tokens"),
        ("max_tokens overflow to inf", C, b'{"prompt": "hi", "max_tokens": 1e999}', 400, "max_tokens"),
        ("max_tokens fraction", C, {"prompt": "hi", "max_tokens": 2.5}, 400, "integer"),
        ("temperature negative", C, {"prompt": "hi", "temperature": -0.1}, 400, "temperature"),
        ("temperature huge", C, {"prompt": "hi", "temperature": 1e30}, 400, "temperature"),
        ("temperature string", C, {"prompt": "hi", "temperature": "hot"}, 400, "temperature"),
        ("top_p above 1", C, {"prompt": "hi", "top_p": 1.5}, 400, "top_p"),
        ("top_k below -1", C, {"prompt": "hi", "top_k": -5}, 400, "top_k"),
        ("min_p bool", C, {"prompt": "hi", "min_p": True}, 400, "min_p"),
        ("presence_penalty 3", C, {"prompt": "hi", "presence_penalty": 3}, 400, "presence_penalty"),
        ("frequency_penalty -9", C, {"prompt": "hi", "frequency_penalty": -9}, 400, "frequency_penalty"),
        ("seed fraction", C, {"prompt": "hi", "seed": 0.5}, 400, "seed"),
        ("seed beyond 64 bits", C, b'{"prompt": "hi", "seed": 1e30}', 400, "seed"),
        ("n zero", C, {"prompt": "hi", "n": 0}, 400, "'n'"),
        ("n above --parallel", C, {"prompt": "hi", "n": 1000}, 400, "'n'"),
        ("stream string", C, {"prompt": "hi", "stream": "yes"}, 400, "stream"),
        ("stream_options list", C, {"prompt": "hi", "stream": True, "stream_options": [1]}, 400, "stream_options"),
        ("stop number", C, {"prompt": "hi", "stop": 3}, 400, "stop"),
        ("stop empty string", C, {"prompt": "hi", "stop": [""]}, 400, "stop"),
        ("stop five strings", C, {"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ("stop too long", C, {"prompt": "hi", "stop": ["x" * 300]}, 400, "stop"),
        ("stop invalid UTF-8", C, b'{"prompt": "hi", "stop": ["\xff"]}', 400, "UTF-8"),
        ("logprobs above 5", C, {"prompt": "hi", "logprobs": 6}, 400, "logprobs"),
        ("logprobs string", C, {"prompt": "hi", "logprobs": "2"}, 400, "logprobs"),
        ("logprobs negative", C, {"prompt": "hi", "logprobs": -1}, 400, "logprobs"),
        ("messages missing", P, {"max_tokens": 2}, 400, "messages"),
        ("messages empty", P, {"messages": []}, 400, "messages"),
        ("messages object", P, {"messages": {"role": "user"}}, 400, "messages"),
        ("message without role", P, {"messages": [{"content": "hi"}]}, 400, "role"),
        ("message unknown role", P, {"messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
        ("message content number", P, {"messages": [{"role": "user", "content": 5}]}, 400, "content"),
        ("message image part", P, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, 400, "text"),
        ("message invalid UTF-8", P, b'{"messages": [{"role": "user", "content": "\xed\xa0\x80"}]}', 400, "UTF-8"),
        ("chat logprobs number", P, {"messages": [{"role": "user", "content": "hi"}], "logprobs": 2}, 400, "logprobs"),
        ("chat top_logprobs alone", P, {"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, 400, "logprobs"),
        ("chat top_logprobs 21", P, {"messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 21}, 400,
         "top_logprobs"),
        ("chat too long", P, {"messages": [{"role": "user", "content": big}]}, 400, "context"),
        ("unknown endpoint", "/v1/embeddings", {"input": "hi"}, 404, "endpoint"),
        ("GET on a POST endpoint", None, None, 405, "POST"),
    ]
    for what, path, body, want, text in rows:
        if path is None:
            status, data = srv.get(C)
        else:
            status, data = srv.post(path, body)
        try:
            msg = json.loads(data)["error"]["message"]
        except Exception:
            msg = None
        check(status == want and msg is not None and text in msg, "malformed: %s -> %d %r" % (what, status, msg))
    # unknown fields are ignored, null means default, content parts are joined
    status, data = srv.post(C, {"prompt": "hi", "max_tokens": 3, "frobnicate": {"a": [1, 2]}, "temperature": None, "user": "x"})
    check(status == 200 and json.loads(data)["usage"]["completion_tokens"] >= 1, "unknown fields ignored, null fields default")
    status, data = srv.post(P, {"messages": [{"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                                             {"role": "assistant", "content": None}, {"role": "user", "content": "hi"}], "max_tokens": 2})
    check(status == 200, "content parts, null content and the developer role are accepted (%d)" % status)
    status, data = srv.post(C, {"prompt": [1, 2, 3], "max_tokens": 2})
    check(status == 200 and json.loads(data)["usage"]["prompt_tokens"] == 3, "a prompt of token ids")


def http_abuse(srv):
    port = srv.port
    # oversize bodies: announced by Content-Length, or sent chunked without one
    status, data = srv.post("/v1/completions", b'{"prompt": "' + b"a" * 70000 + b'"}')
    check(status == 413 and b"too large" in data, "body over --max-body: 413 (Content-Length)")
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.putrequest("POST", "/v1/completions")
    c.putheader("Transfer-Encoding", "chunked")
    c.endheaders()
    for _ in range(20):
        c.send(b"1000\r\n" + b"a" * 4096 + b"\r\n")
    c.send(b"0\r\n\r\n")
    r = c.getresponse()
    check(r.status == 413, "chunked body over --max-body: 413 (%d)" % r.status)
    c.close()
    # a header flood: the server answers with an error or closes; it does not grow without bound
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        for i in range(4000):
            s.sendall(b"X-Flood-%d: %s\r\n" % (i, b"y" * 100))
        s.sendall(b"\r\n")
        reply = s.recv(100)
    except OSError:
        reply = b"(connection closed)"
    s.close()
    check(not reply.startswith(b"HTTP/1.1 200"), "header flood refused (%r)" % reply[:40])
    # a slow client (half a request line, then nothing) is dropped after --timeout, others unaffected
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pro")
    t0 = time.time()
    status, _ = srv.post("/v1/completions", {"prompt": "hi", "max_tokens": 2})
    try:
        got = s.recv(100)
    except OSError:
        got = b""
    waited = time.time() - t0
    s.close()
    check(status == 200 and not got.startswith(b"HTTP/1.1 200") and waited < 15,
          "slow client dropped after the timeout (%.1f s), others served meanwhile" % waited)
    # API key: checked on /v1, not on /health
    h = srv.health()
    check(h["status"] == "ok", "server healthy after the abuse")


def disconnect_mid_stream():
    """A streaming client that leaves: its sequence goes away and its KV blocks return to the pool at
    once (within 2 s), long before the 8000 tokens it asked for would be done."""
    srv = Server(TINY, "-c", "8192", "--parallel", "2", "--kv-blocks", "1200")
    before = srv.wait_idle()
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": 8000, "ignore_eos": True, "temperature": 1.0, "seed": 1,
                       "stream": True, "unknown_field": 1}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
              % (len(body), body))
    got = b""
    while got.count(b"data: ") < 3:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    during = srv.health()
    s.close()
    after = srv.wait_idle(2)
    check(during["requests_running"] == 1 and during["kv_blocks_free"] < during["kv_blocks_total"],
          "disconnect: while streaming, 1 request runs and holds KV blocks (%d of %d free)" % (during["kv_blocks_free"], during["kv_blocks_total"]))
    check(after["requests_running"] == 0 and after["slots_used"] == 0 and after["kv_blocks_free"] == after["kv_blocks_total"]
          == before["kv_blocks_total"], "disconnect: sequence removed, every KV block back (%d of %d free)"
          % (after["kv_blocks_free"], after["kv_blocks_total"]))
    # the same for a non-streaming request abandoned while generating
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": 8000, "ignore_eos": True, "temperature": 1.0}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    wait_for(lambda: srv.health()["requests_running"] > 0, 10, 0.01)
    time.sleep(0.3)
    s.close()
    after = srv.wait_idle(3)
    check(after["requests_running"] == 0 and after["kv_blocks_free"] == after["kv_blocks_total"],
          "disconnect: an abandoned non-streaming request is removed too (%d of %d free)" % (after["kv_blocks_free"], after["kv_blocks_total"]))
    srv.stop("disconnect")


def wait_for(cond, seconds=30, step=0.005):
    """Polls cond() until it holds or seconds pass (a fast request may finish before a poll sees it
    running: callers also stop when its thread is done, so no wait here can hang the suite)."""
    deadline = time.time() + seconds
    while not cond() and time.time() < deadline:
        time.sleep(step)


def stream_raw(port, body, out, key):
    """Posts a streaming request and records (status, number of data events, the last event)."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read().decode("utf-8", "replace")
        events = [l[6:] for l in data.split("\n") if l.startswith("data: ")]
        out[key] = (r.status, events, data)
        c.close()
    except Exception as e:  # noqa: BLE001 - recorded and checked by the caller
        out[key] = (None, [], repr(e))


def queue_limits():
    """--parallel 1 --queue 1: one runs, one waits, the third gets 503 at once; all others complete."""
    srv = Server(TINY, "-c", "256", "--parallel", "1", "--queue", "1")
    out = {}
    long_body = {"prompt": "Once upon a time", "max_tokens": 200, "temperature": 1.0, "seed": 3, "stream": True}
    t1 = threading.Thread(target=stream_raw, args=(srv.port, long_body, out, "a"))
    t1.start()
    wait_for(lambda: srv.health()["requests_running"] > 0 or not t1.is_alive())
    t2 = threading.Thread(target=stream_raw, args=(srv.port, dict(long_body, max_tokens=5), out, "b"))
    t2.start()
    wait_for(lambda: srv.health()["requests_waiting"] > 0 or not t2.is_alive())
    status, data = srv.post("/v1/completions", {"prompt": "hi", "max_tokens": 2})
    t1.join()
    t2.join()
    check(status == 503 and b"busy" in data, "queue full: 503 with a JSON error (%d)" % status)
    check(out["a"][0] == 200 and out["a"][1][-1] == "[DONE]" and out["b"][0] == 200 and out["b"][1][-1] == "[DONE]",
          "queue full: the running and the waiting request both complete")
    srv.stop("queue limits")


def kv_exhausted():
    """A pool of 6 blocks (96 tokens): a 150-token prompt fails with 503, the running stream goes on."""
    srv = Server(TINY, "-c", "256", "--parallel", "2", "--kv-blocks", "6")
    out = {}
    t = threading.Thread(target=stream_raw, args=(srv.port, {"prompt": "Once upon a time", "max_tokens": 60, "temperature": 1.0,
                                                             "seed": 5, "stream": True, "top_k": 0}, out, "a"))
    t.start()   # (if it ends before the big request comes, the checks still hold: 150 tokens never fit 6 blocks)
    wait_for(lambda: srv.health()["requests_running"] > 0 or not t.is_alive())
    status, data = srv.post("/v1/completions", {"prompt": list(range(1, 151)), "max_tokens": 4})
    t.join()
    events = out["a"][1]
    last = json.loads(events[-2]) if len(events) >= 2 else {}
    check(status == 503 and b"KV" in data, "KV pool exhausted: that request gets 503 (%d %r)" % (status, data[:80]))
    check(out["a"][0] == 200 and events[-1] == "[DONE]" and last.get("choices", [{}])[0].get("finish_reason") == "length",
          "KV pool exhausted: the other stream completes all its tokens")
    h = srv.wait_idle()
    check(h["kv_blocks_free"] == h["kv_blocks_total"] == 6, "KV pool exhausted: every block back (%d of %d)" % (h["kv_blocks_free"], h["kv_blocks_total"]))
    srv.stop("KV exhausted")


def chunked_prefill():
    """--batch 64: a 900-token prompt takes 15 steps to prefill, and a running stream gets a token in
    each of them (mllm_step feeds decode tokens first, then prompt chunks in the remaining budget)."""
    srv = Server(TINY, "-c", "1024", "--parallel", "2", "--batch", "64")
    times = []

    def stream():
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
        c.request("POST", "/v1/completions", json.dumps({"prompt": "Once upon a time", "max_tokens": 600, "ignore_eos": True,
                                                         "temperature": 1.0, "stream": True}))
        r = c.getresponse()
        while True:
            line = r.fp.readline()
            if not line or line.startswith(b"data: [DONE]"):
                break
            if line.startswith(b"data: "):
                times.append(time.time())
        c.close()
    t = threading.Thread(target=stream)
    t.start()
    wait_for(lambda: len(times) >= 3 or not t.is_alive(), 60, 0.001)
    t0 = time.time()
    status, data = srv.post("/v1/completions", {"prompt": [1 + i % 500 for i in range(900)], "max_tokens": 1})
    t1 = time.time()
    t.join()
    during = sum(1 for x in times if t0 < x < t1)
    check(status == 200 and json.loads(data)["usage"]["prompt_tokens"] == 900 and during >= 10,
          "chunked prefill: the running stream got %d tokens while a 900-token prompt was prefilled" % during)
    srv.stop("chunked prefill")


def api_key():
    srv = Server(TINY, "-c", "256", "--api-key", "s3cret")
    bad = openai.OpenAI(base_url="http://127.0.0.1:%d/v1" % srv.port, api_key="s3cres", max_retries=0)
    try:
        bad.completions.create(model="m", prompt="hi", max_tokens=2)
        ok = False
    except openai.AuthenticationError:
        ok = True
    check(ok, "api key: a wrong key gets 401")
    status, _ = srv.post("/v1/completions", {"prompt": "hi", "max_tokens": 2})
    check(status == 401, "api key: no key gets 401")
    good = openai.OpenAI(base_url="http://127.0.0.1:%d/v1" % srv.port, api_key="s3cret", max_retries=0)
    check(good.completions.create(model="m", prompt="hi", max_tokens=2).usage.completion_tokens >= 1, "api key: the right key works")
    check(srv.get("/health")[0] == 200, "api key: /health needs none")
    srv.stop("api key")


def concurrent_streams(srv):
    """Eight clients at once, each its own seed: every stream equals its solo run (batching is exact)."""
    solo = {}
    for i in range(8):
        r = srv.client.completions.create(model="m", prompt="Story %d:" % i, max_tokens=20, temperature=1.0, seed=100 + i)
        solo[i] = r.choices[0].text
    out = {}

    def run(i):
        chunks = srv.client.completions.create(model="m", prompt="Story %d:" % i, max_tokens=20, temperature=1.0, seed=100 + i,
                                               stream=True)
        out[i] = stream_text(chunks, False)[0].get(0)
    ts = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check(all(out.get(i) == solo[i] for i in range(8)), "8 concurrent streams each equal their solo run")


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--quick", action="store_true", help="tiny model only (sanitizer builds)")
    ap.add_argument("--threads-only", action="store_true", help="only the concurrent parts (ThreadSanitizer build)")
    ARGS = ap.parse_args()
    def section(fn, *a):   # an exception (e.g. the server died) fails the section, the rest still runs
        try:
            fn(*a)
        except Exception as e:  # noqa: BLE001
            check(False, "%s raised %r" % (fn.__name__, e))
    if not os.path.exists(TINY):
        check(False, "tiny model %s missing (set MLLM_TESTDATA)" % TINY)
    else:
        srv = Server(TINY, "-c", "256", "--parallel", "8", "--max-body", "65536", "--timeout", "2")
        if not ARGS.threads_only:
            section(openai_suite, srv, TINY, "tiny", 24, False)
            section(logprobs_suite, srv, TINY, "tiny")
        section(concurrent_streams, srv)
        if not ARGS.threads_only:
            section(malformed_table, srv)
            section(http_abuse, srv)
        srv.stop("tiny")
        for fn in (disconnect_mid_stream, queue_limits, kv_exhausted, chunked_prefill, api_key):
            if not ARGS.threads_only or fn is not api_key:
                section(fn)
    if not ARGS.quick and not ARGS.threads_only:
        if not os.path.exists(ARGS.model):
            check(False, "%s missing (make model)" % ARGS.model)
        else:
            srv = Server(ARGS.model, "-c", "1024", "--parallel", "4")
            section(openai_suite, srv, ARGS.model, "SmolLM2", 32, True)
            srv.stop("SmolLM2")
    print("%d passed, %d failed" % (PASSED, FAILED))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
