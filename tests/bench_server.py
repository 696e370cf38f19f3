#!/usr/bin/env python3
"""Load test: C concurrent streaming clients against build/server and llama.cpp's llama-server, on the
same model, threads and parallel slots, in the same run (alternating), on loopback.

Each client sends R requests one after another (a fixed count, so the run is bounded; a wall-clock cap
stops it anyway).  Every request asks for exactly N tokens (ignore_eos), temperature 0.8 with its own
seed.  Reported per server and concurrency: aggregate generated tok/s (completion tokens / wall time),
time to first token p50/p99, inter-token latency p50/p99 (gaps between streamed chunks), and how many
requests failed or came back short (must be 0: every request gets its full answer or a clean error).

  bench_server.py --server build/server --model M.gguf [--peer peer/bin/llama-server] [-t 2]
                  [--clients 16,64] [--requests 2] [--tokens 64] [--time-limit 300]"""
import argparse, asyncio, json, os, signal, socket, statistics, subprocess, sys, time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


async def one_request(port, body, res):
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
                data = await reader.readexactly(size)
                await reader.readline()
            else:
                data = await reader.read(65536)
                if not data:
                    return
            yield data
    first, last, gaps, n_chunks, usage, done, err = None, None, [], 0, None, False, None
    buf = b""
    async for chunk in pieces():
        buf += chunk
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
                err = ev["error"].get("message")
                continue
            if ev.get("usage"):
                usage = ev["usage"]
            for c in ev.get("choices", []):
                if c.get("text"):
                    now = time.perf_counter()
                    if first is None:
                        first = now
                    else:
                        gaps.append(now - last)
                    last = now
                    n_chunks += 1
    if status != 200:
        err = buf[:200].decode("utf-8", "replace") or "HTTP %d" % status
    writer.close()
    tokens = usage["completion_tokens"] if usage else n_chunks
    res.append({"status": status, "ttft": (first - t0) if first else None, "gaps": gaps, "tokens": tokens, "done": done,
                "err": err, "chunks": n_chunks})


async def client(port, cid, n_req, n_tok, res):
    for r in range(n_req):
        body = {"prompt": "Request %d.%d: write a long story about a lighthouse keeper and the sea." % (cid, r),
                "max_tokens": n_tok, "temperature": 0.8, "top_k": 40, "top_p": 0.95, "seed": cid * 1000 + r,
                "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}
        try:
            await one_request(port, body, res)
        except Exception as e:  # noqa: BLE001 - counted as a failure
            res.append({"status": None, "ttft": None, "gaps": [], "tokens": 0, "done": False, "err": repr(e), "chunks": 0})


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
    deadline = time.time() + 300
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


def run_one(name, cmd, port, n_clients, args):
    log = open("build/bench_server.%s.log" % name.split()[0], "a")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    try:
        if not wait_up(port, proc, "/health"):
            print("%-28s %3d clients: did not start (see build/bench_server.*.log)" % (name, n_clients))
            return
        # one warm-up request so page faults and first-call costs are not in the numbers
        asyncio.run(load(port, 1, 1, 4, 60))
        res, wall = asyncio.run(load(port, n_clients, args.requests, args.tokens, args.time_limit))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    want = n_clients * args.requests
    full = [r for r in res if r["status"] == 200 and r["done"] and r["tokens"] == args.tokens and not r["err"]]
    clean_err = [r for r in res if r not in full and (r["status"] in (429, 503) or r["err"])]
    lost = want - len(full) - len(clean_err)
    toks = sum(r["tokens"] for r in full)
    ttft = [r["ttft"] for r in full if r["ttft"] is not None]
    gaps = [g for r in full for g in r["gaps"]]
    print("%-28s %3d clients: %7.1f tok/s  TTFT p50 %6.0f p99 %6.0f ms  ITL p50 %5.0f p99 %6.0f ms  "
          "requests %d/%d full, %d clean errors, %d lost  (%.1f s)"
          % (name, n_clients, toks / wall, 1000 * pct(ttft, 50), 1000 * pct(ttft, 99), 1000 * pct(gaps, 50), 1000 * pct(gaps, 99),
             len(full), want, len(clean_err), lost, wall))
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="build/server")
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--peer", default="peer/bin/llama-server")
    ap.add_argument("-t", "--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "2")))
    ap.add_argument("--clients", default="16,64")
    ap.add_argument("--requests", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--ctx", type=int, default=512, help="context per slot")
    ap.add_argument("--time-limit", type=float, default=300)
    args = ap.parse_args()
    have_peer = os.access(args.peer, os.X_OK)
    if not have_peer:
        print("note: %s missing (PEER_SERVER=1 tests/peer/build_llamacpp.sh builds it); measuring ours only" % args.peer)
    print("model %s, %d threads, %d requests per client, %d tokens each, %d-token context per slot"
          % (os.path.basename(args.model), args.threads, args.requests, args.tokens, args.ctx))
    for n in [int(x) for x in args.clients.split(",")]:
        port = free_port()
        ours = [args.server, "-m", args.model, "--port", str(port), "-t", str(args.threads), "--parallel", str(n), "-c", str(args.ctx),
                "--kv-blocks", str(n * ((args.ctx + 15) // 16)), "--queue", str(n)]
        run_one("metalllm.h build/server", ours, port, n, args)
        if have_peer:
            port = free_port()
            peer = [args.peer, "-m", args.model, "--port", str(port), "--host", "127.0.0.1", "-t", str(args.threads), "-tb",
                    str(args.threads), "-np", str(n), "-c", str(n * args.ctx), "--no-warmup", "-lv", "0"]
            run_one("llama.cpp llama-server", peer, port, n, args)


if __name__ == "__main__":
    main()
