#!/usr/bin/env python3
"""Load test: C concurrent streaming clients against build/server and llama.cpp's llama-server, on the
same model, threads and parallel slots, in the same run, on loopback.

The two servers are measured alternately: for each round and each client count, one server then the
other (the order swaps every round, so neither always runs first on a machine whose load drifts).  Each
client sends R requests one after another to POST /v1/completions with stream=true; every request asks
for exactly N tokens (max_tokens N, ignore_eos) with the same sampler for both servers (temperature 0.8,
top_k 40, top_p 0.95, min_p 0.05: llama-server's defaults) and its own seed.  The count is fixed and
each measurement has a wall-clock cap, so the run is bounded in count and time.

Reported per server and client count: aggregate generated tok/s (completion tokens of full answers /
wall time from the first request sent to the last answer received), time to first token (request sent
to first text chunk) p50/p99, inter-token latency (gaps between text chunks of one answer) p50/p99,
and every request's fate:
  ok      status 200, the stream ended with [DONE], usage.completion_tokens == N, finish_reason "length"
  clean   a clean error: a non-200 status with a JSON error body, or an error event in the stream
  lost    anything else: connection dropped, a short or unterminated stream, no usage, unparsable data
  cut     still running when the measurement's time cap hit (the bound, not the server, ended it)
The order is round by round, thread count by thread count, client count by client count; a pair of
measurements (both servers) starts only when it would end within --budget seconds at the caps.
"Nothing lost" means lost == 0 and cut == 0; the exit status is 1 when ours loses or cuts a request.

  bench_server.py --server build/server --model M.gguf [--peer peer/bin/llama-server] [-t 2]
                  [--clients 16,64] [--requests 1] [--tokens 16] [--rounds 2] [--time-limit 60] [--budget 300]
  -t defaults to $BENCH_THREADS or "1 2" (each thread count is measured, servers alternating within it)."""
import argparse, asyncio, json, os, signal, socket, subprocess, sys, time

SAMPLER = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pct(xs, p):   # nearest-rank percentile
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


async def one_request(port, body, r):
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body).encode()
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip().lower()
    chunked = headers.get(b"transfer-encoding") == b"chunked"

    async def pieces():   # the body, with chunked transfer encoding undone
        while True:
            if chunked:
                size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    return
                piece = await reader.readexactly(size)
                await reader.readline()
            else:
                piece = await reader.read(65536)
                if not piece:
                    return
            yield piece
    first = last = None
    gaps, usage, done, err, finish, body_text = [], None, False, None, None, b""
    buf = b""
    async for piece in pieces():
        if status != 200:
            body_text += piece
            continue
        buf += piece
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            payload = line[6:]
            if payload == b"[DONE]":
                done = True
                continue
            ev = json.loads(payload)
            if "error" in ev:
                err = str(ev["error"].get("message"))
                continue
            if ev.get("usage"):
                usage = ev["usage"]
            for c in ev.get("choices", []):
                if c.get("finish_reason"):
                    finish = c["finish_reason"]
                if c.get("text"):
                    now = time.perf_counter()
                    if first is None:
                        first = now
                    else:
                        gaps.append(now - last)
                    last = now
    writer.close()
    r.update(status=status, ttft=(first - t0) if first else None, gaps=gaps, done=done, finish=finish,
             tokens=usage.get("completion_tokens") if usage else None)
    if status != 200:
        try:
            err = str(json.loads(body_text)["error"]["message"])
        except (ValueError, KeyError, TypeError):
            err = None   # not a clean error: counted as lost
        r["state"] = "clean" if err else "lost"
    elif err:
        r["state"] = "clean"
    elif done and finish == "length" and r["tokens"] == body["max_tokens"]:
        r["state"] = "ok"
    else:
        r["state"] = "lost"
    r["err"] = err


async def client(port, cid, n_req, n_tok, res):
    for k in range(n_req):
        body = dict(SAMPLER, prompt="Request %d.%d: write a long story about a lighthouse keeper and the sea." % (cid, k),
                    max_tokens=n_tok, seed=cid * 1000 + k, stream=True, stream_options={"include_usage": True},
                    ignore_eos=True)
        r = {"state": "cut", "gaps": [], "ttft": None, "tokens": 0}
        res.append(r)
        try:
            await one_request(port, body, r)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a dropped connection or garbage: lost
            r.update(state="lost", err=repr(e))


async def load(port, n_clients, n_req, n_tok, limit):
    res = []
    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(client(port, c, n_req, n_tok, res) for c in range(n_clients))), limit)
    except asyncio.TimeoutError:
        pass
    return res, time.perf_counter() - t0


def wait_up(port, proc, path):
    import http.client
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def run_one(name, threads, cmd, port, n_clients, args):
    log = open(os.path.join(args.logdir, "bench_server.%s.log" % name), "a")
    log.write("\n$ %s\n" % " ".join(cmd))
    log.flush()
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    try:
        if not wait_up(port, proc, "/health"):
            print("%-12s -t %d %3d clients: did not start (see %s)" % (name, threads, n_clients, log.name))
            return None
        # one warm-up request so page faults and first-call costs are not in the numbers
        asyncio.run(load(port, 1, 1, 4, 60))
        res, wall = asyncio.run(load(port, n_clients, args.requests, args.tokens, args.time_limit))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    ok = [r for r in res if r["state"] == "ok"]
    m = {"tps": sum(r["tokens"] for r in ok) / wall, "wall": wall, "want": n_clients * args.requests,
         "ttft50": 1000 * pct([r["ttft"] for r in ok], 50), "ttft99": 1000 * pct([r["ttft"] for r in ok], 99),
         "itl50": 1000 * pct([g for r in ok for g in r["gaps"]], 50), "itl99": 1000 * pct([g for r in ok for g in r["gaps"]], 99)}
    for s in ("ok", "clean", "lost", "cut"):
        m[s] = sum(1 for r in res if r["state"] == s)
    m["cut"] += m["want"] - len(res)   # requests a client never got to send before the cap
    print("%-12s -t %d %3d clients: %6.1f tok/s  TTFT p50 %6.0f p99 %6.0f ms  ITL p50 %5.0f p99 %5.0f ms  "
          "ok %d/%d, clean errors %d, lost %d, cut %d  (%.1f s)"
          % (name, threads, n_clients, m["tps"], m["ttft50"], m["ttft99"], m["itl50"], m["itl99"], m["ok"], m["want"],
             m["clean"], m["lost"], m["cut"], wall))
    for r in res:
        if r["state"] == "lost":
            print("    lost: %s" % (r.get("err") or "status %s, done %s, finish %s, tokens %s"
                                    % (r.get("status"), r.get("done"), r.get("finish"), r.get("tokens"))))
            break
    sys.stdout.flush()
    return m


def span(ms, key, fmt):   # "a" for one round, "lo-hi" over several
    v = sorted(m[key] for m in ms)
    return fmt % v[0] if len(v) == 1 or fmt % v[0] == fmt % v[-1] else (fmt + "-" + fmt) % (v[0], v[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="build/server")
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--peer", default="peer/bin/llama-server")
    ap.add_argument("-t", "--threads", default=os.environ.get("BENCH_THREADS", "1 2"), help="thread counts, e.g. '1 2' or 1,2")
    ap.add_argument("--clients", default="16,64")
    ap.add_argument("--requests", type=int, default=1, help="requests per client, one after another")
    ap.add_argument("--tokens", type=int, default=16, help="tokens generated per request")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=512, help="context per slot")
    ap.add_argument("--time-limit", type=float, default=60, help="cap per measurement, seconds")
    ap.add_argument("--budget", type=float, default=300, help="no measurement pair starts that could end past this, seconds")
    ap.add_argument("--logdir", default="build")
    args = ap.parse_args()
    have_peer = os.access(args.peer, os.X_OK)
    if not have_peer:
        print("note: %s missing (PEER_SERVER=1 tests/peer/build_llamacpp.sh builds it); measuring ours only" % args.peer)
    threads = [int(x) for x in args.threads.replace(",", " ").split()]
    print("model %s, threads %s, slots = clients, %d-token context per slot; per client %d streaming request(s) of "
          "%d tokens (ignore_eos; %s); %d rounds, servers alternating"
          % (os.path.basename(args.model), " and ".join(map(str, threads)), args.ctx, args.requests, args.tokens,
             ", ".join("%s %g" % kv for kv in SAMPLER.items()), args.rounds))
    clients = [int(x) for x in args.clients.split(",")]

    def ours(port, n, t):
        return [args.server, "-m", args.model, "--port", str(port), "-t", str(t), "--parallel", str(n),
                "-c", str(args.ctx), "--kv-blocks", str(n * ((args.ctx + 15) // 16)), "--queue", str(n)]

    def peer(port, n, t):   # -c is the total over the slots (each gets c/np); defaults otherwise
        return [args.peer, "-m", args.model, "--port", str(port), "--host", "127.0.0.1", "-t", str(t),
                "-tb", str(t), "-np", str(n), "-c", str(n * args.ctx), "--no-warmup"]
    servers = [("metalllm.h", ours)] + ([("llama.cpp", peer)] if have_peer else [])
    results = {}
    t_start = time.time()
    pairs = [(rnd, t, n) for rnd in range(args.rounds) for t in threads for n in clients]
    for k, (rnd, t, n) in enumerate(pairs):
        # both servers or neither: a pair starts only when both would end within the budget at the cap
        spent = time.time() - t_start
        if k and spent + len(servers) * (args.time_limit + 10) > args.budget:
            print("the last %d of %d measurement pairs skipped: %.0f s spent, budget %.0f s" % (len(pairs) - k, len(pairs), spent, args.budget))
            break
        for name, cmd in (servers if rnd % 2 == 0 else servers[::-1]):
            port = free_port()
            m = run_one(name, t, cmd(port, n, t), port, n, args)
            results.setdefault((name, t, n), []).append(m)
    print("\ntotal %.0f s.  Ranges (lowest-highest) are over the runs; requests summed over them.\n" % (time.time() - t_start))
    print("| server | threads | clients | runs | aggregate tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | requests ok / failed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    bad = False
    for t, n in [(t, n) for t in threads for n in clients]:
        for name, _ in servers:
            ms = results.get((name, t, n))
            if not ms:
                continue
            if any(m is None for m in ms):
                print("| %s | %d | %d | %d | did not start | | | | | |" % (name, t, n, len(ms)))
                bad = bad or name == "metalllm.h"
                continue
            failed = sum(m["clean"] + m["lost"] + m["cut"] for m in ms)
            detail = "" if not failed else " (%d clean errors, %d lost, %d cut by the cap)" % (
                sum(m["clean"] for m in ms), sum(m["lost"] for m in ms), sum(m["cut"] for m in ms))
            if name == "metalllm.h" and sum(m["lost"] + m["cut"] for m in ms):
                bad = True
            if not sum(m["ok"] for m in ms):
                print("| %s | %d | %d | %d | none finished | | | | | 0 / %d%s |" % (name, t, n, len(ms), failed, detail))
                continue
            print("| %s | %d | %d | %d | %s | %s | %s | %s | %s | %d / %d%s |"
                  % (name, t, n, len(ms), span(ms, "tps", "%.0f"), span(ms, "ttft50", "%.0f"), span(ms, "ttft99", "%.0f"),
                     span(ms, "itl50", "%.0f"), span(ms, "itl99", "%.0f"), sum(m["ok"] for m in ms), failed, detail))
    print("\nSame for both: model file, -t, slots, context per slot, prompts, max_tokens, ignore_eos, sampler "
          "settings, loopback, this client.\nDiffers: HTTP stack (libmicrohttpd thread per connection vs "
          "cpp-httplib thread pool), the engines' kernels, attention and batching; llama-server's prompt-prefix "
          "cache and extra no-op sampler stages, and its default batch size (ours --batch 256).")
    if bad:
        print("FAIL: build/server lost or cut requests, or did not start")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
