#!/usr/bin/env python3
"""wirecheck: record the wire behaviour of a Codex-exec-server-compatible server.

Runs a fixed list of scenarios against a server and prints/records every frame
sent and received (in arrival order, with time relative to the latest send on
that connection), so that transcripts of two servers (e.g. the reference
`codex exec-server` and execd) can be diffed.

Usage:
  wirecheck.py --url ws://127.0.0.1:PORT [--out file.jsonl] [--only a,b] [--skip a,b] [--raw] [--no-times]
               [--slow] [--ping-wait 35]
  wirecheck.py --stdio [--out file.jsonl] -- CMD ARGS...   (a fresh server per scenario)
  wirecheck.py --list

  --slow runs slow_detach_ttl_and_retention (~35 s); --ping-wait N watches raw frames for N s
  (server_pings). Scenarios needing several connections / HTTP are skipped under --stdio.
  Inherent races (stdout vs stderr order, exited vs output order) show up as diffs between runs.

Requires: Python 3.8+, `pip install websockets` (only for --url).

Output: one JSON object per line:
  {"scenario": ..., "conn": "A", "dir": "send"|"recv"|"event"|"note", "t_ms": ..., "msg"|"raw"|...}
By default values that vary between runs are normalised: UUIDs -> "<uuid>", IP:port -> "<addr>",
environmentInfo leaves -> their JSON type, timings are kept (drop them with
--no-times for a diff-friendly transcript).
"""
import argparse
import asyncio
import base64
import json
import os
import re
import socket
import sys
import time

UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
ADDR_RE = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}:\d{1,5}\b")

OPTS = None
OUT = None
CURRENT = {"scenario": None}


def b64(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


def unb64(s):
    try:
        return base64.b64decode(s).decode("utf-8", "replace")
    except Exception:
        return None


def normalise(v, key=None):
    if OPTS.raw:
        return v
    if key == "environmentInfo" and isinstance(v, dict):
        def shape(x):
            if isinstance(x, dict):
                return {k: shape(x[k]) for k in sorted(x)}
            if isinstance(x, list):
                return "<list>"
            return "<%s>" % type(x).__name__
        return shape(v)
    if key in ("modifiedAtMs", "createdAtMs", "accessedAtMs") and isinstance(v, int) and v > 0:
        return "<ms>"
    if isinstance(v, dict):
        return {k: normalise(x, k) for k, x in v.items()}
    if isinstance(v, list):
        return [normalise(x) for x in v]
    if isinstance(v, str):
        return ADDR_RE.sub("<addr>", UUID_RE.sub("<uuid>", v))
    return v


def decorate(msg):
    """Add human-readable decoded text next to base64 chunks (for reading only)."""
    try:
        p = msg.get("params") or msg.get("result") or {}
        if isinstance(p, dict):
            if isinstance(p.get("chunk"), str):
                msg["_text"] = unb64(p["chunk"])
            if isinstance(p.get("chunks"), list):
                msg["_text"] = [unb64(c.get("chunk", "")) for c in p["chunks"] if isinstance(c, dict)]
    except Exception:
        pass
    return msg


def emit(rec):
    rec = dict(rec)
    rec["scenario"] = CURRENT["scenario"]
    if OPTS.no_times:
        rec.pop("t_ms", None)
    order = ["scenario", "conn", "dir", "t_ms"]
    out = {k: rec[k] for k in order if k in rec}
    out.update({k: v for k, v in rec.items() if k not in out})
    line = json.dumps(out, ensure_ascii=False)
    if len(line) > 2000 and not OPTS.out:
        line = line[:2000] + "...(truncated)"
    print(line, flush=True)
    if OUT:
        OUT.write(json.dumps(out, ensure_ascii=False) + "\n")
        OUT.flush()


def note(text, **kw):
    emit(dict(dir="note", note=text, **kw))


class Closed(Exception):
    pass


# ---------------------------------------------------------------- connections
class Conn:
    """One client connection. Background reader logs everything on arrival."""

    def __init__(self, name):
        self.name = name
        self.msgs = []  # (t_abs, parsed or None, raw)
        self.cond = asyncio.Condition()
        self.closed = None
        self.last_send = time.monotonic()
        self.ids = 0

    def next_id(self):
        self.ids += 1
        return self.ids

    def _rel(self):
        return round((time.monotonic() - self.last_send) * 1000, 1)

    async def _on_recv(self, raw):
        t = self._rel()
        try:
            m = json.loads(raw)
        except Exception:
            m = None
        if m is not None:
            nm = normalise(m)
            if isinstance(nm, dict):
                nm = decorate(nm)
            emit(dict(conn=self.name, dir="recv", t_ms=t, msg=nm))
        else:
            emit(dict(conn=self.name, dir="recv", t_ms=t, raw=raw if isinstance(raw, str) else repr(raw)))
        async with self.cond:
            self.msgs.append((time.monotonic(), m, raw))
            self.cond.notify_all()

    async def _on_close(self, info):
        emit(dict(conn=self.name, dir="event", t_ms=self._rel(), event="closed", info=info))
        async with self.cond:
            self.closed = info
            self.cond.notify_all()

    async def send(self, obj, log=None):
        raw = obj if isinstance(obj, (str, bytes)) else json.dumps(obj)
        self.last_send = time.monotonic()
        if isinstance(obj, (dict, list)):
            shown = log if log is not None else normalise(obj)
            emit(dict(conn=self.name, dir="send", t_ms=0, msg=shown))
        else:
            shown = log if log is not None else (obj if isinstance(obj, str) else "<binary %d bytes>" % len(obj))
            emit(dict(conn=self.name, dir="send", t_ms=0, raw=shown))
        await self._send_raw(raw)

    async def wait(self, pred, timeout=5.0, start=0):
        """Wait for a message m (parsed) with pred(m) among msgs[start:]; return it or None."""
        deadline = time.monotonic() + timeout
        async with self.cond:
            i = start
            while True:
                while i < len(self.msgs):
                    m = self.msgs[i][1]
                    i += 1
                    if m is not None and pred(m):
                        return m
                if self.closed is not None:
                    return None
                rem = deadline - time.monotonic()
                if rem <= 0:
                    return None
                try:
                    await asyncio.wait_for(self.cond.wait(), rem)
                except asyncio.TimeoutError:
                    pass

    async def request(self, method, params=None, id=None, timeout=5.0, settle=0.0, extra=None, omit_params=False):
        if id is None:
            id = self.next_id()
        msg = {"id": id, "method": method}
        if not omit_params:
            msg["params"] = params if params is not None else {}
        if extra:
            msg.update(extra)
        mark = len(self.msgs)
        await self.send(msg)
        r = await self.wait(lambda m: isinstance(m, dict) and "method" not in m and m.get("id", object()) == id
                            and ("result" in m or "error" in m), timeout, mark)
        if r is None:
            emit(dict(conn=self.name, dir="note", note="no response to id %r within %.1fs" % (id, timeout)))
        if settle:
            await self.settle(settle)
        return r

    async def notify(self, method, params=None):
        msg = {"method": method}
        if params is not None:
            msg["params"] = params
        await self.send(msg)

    async def settle(self, secs):
        """Let notifications arrive for a while (logged by the reader)."""
        end = time.monotonic() + secs
        async with self.cond:
            while self.closed is None:
                rem = end - time.monotonic()
                if rem <= 0:
                    break
                try:
                    await asyncio.wait_for(self.cond.wait(), rem)
                except asyncio.TimeoutError:
                    break

    async def handshake(self, client="wirecheck", resume=None, initialized=True):
        p = {"clientName": client}
        if resume is not None:
            p["resumeSessionId"] = resume
        r = await self.request("initialize", p)
        if initialized:
            await self.notify("initialized", {})
        return r


class WsConn(Conn):
    def __init__(self, name, url):
        super().__init__(name)
        self.url = url
        self.closing_by = "server"

    async def open(self, **kw):
        import websockets
        self.ws = await websockets.connect(self.url, max_size=None, ping_interval=None, **kw)
        self.task = asyncio.ensure_future(self._reader())
        return self

    async def _reader(self):
        import websockets
        try:
            async for raw in self.ws:
                await self._on_recv(raw)
            rc = getattr(getattr(self.ws, "protocol", self.ws), "close_rcvd", None)
            await self._on_close({"by": self.closing_by, "server_close_frame": rc.code if rc else None})
        except websockets.ConnectionClosed as e:
            rc = e.rcvd
            await self._on_close({"by": self.closing_by, "server_close_frame": rc.code if rc else None})
        except Exception as e:  # pragma: no cover
            await self._on_close({"error": repr(e)})

    async def _send_raw(self, raw):
        try:
            await self.ws.send(raw)
        except Exception as e:
            emit(dict(conn=self.name, dir="event", event="send-failed", error=repr(e)))

    async def close(self):
        if self.closed is None:
            self.closing_by = "client"
            emit(dict(conn=self.name, dir="event", t_ms=self._rel(), event="client-close"))
        try:
            await asyncio.wait_for(self.ws.close(), 2)
        except Exception:
            pass
        try:
            await asyncio.wait_for(self.task, 2)
        except Exception:
            pass


class StdioConn(Conn):
    def __init__(self, name, cmd):
        super().__init__(name)
        self.cmd = cmd

    async def open(self):
        self.proc = await asyncio.create_subprocess_exec(
            *self.cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, limit=1 << 26)
        self.task = asyncio.ensure_future(self._reader())
        return self

    async def _reader(self):
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            if not line.endswith(b"\n"):
                emit(dict(conn=self.name, dir="note", note="stdout line without trailing newline"))
            await self._on_recv(line.decode("utf-8", "replace").rstrip("\n"))
        try:
            rc = await asyncio.wait_for(self.proc.wait(), 3)
        except asyncio.TimeoutError:
            rc = "still running"
        await self._on_close({"stdout": "eof", "exit": rc})

    async def _send_raw(self, raw):
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        try:
            self.proc.stdin.write(raw.encode() + b"\n")
            await self.proc.stdin.drain()
        except Exception as e:
            emit(dict(conn=self.name, dir="event", event="send-failed", error=repr(e)))

    async def close(self):
        if self.closed is None:
            emit(dict(conn=self.name, dir="event", t_ms=self._rel(), event="client-close (stdin EOF)"))
        try:
            self.proc.stdin.close()
        except Exception:
            pass
        try:
            await asyncio.wait_for(self.proc.wait(), 3)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        try:
            await asyncio.wait_for(self.task, 2)
        except Exception:
            pass


class Env:
    """Opens connections for a scenario; closes all at the end."""

    def __init__(self):
        self.conns = []

    async def conn(self, name="A", **kw):
        if OPTS.stdio:
            c = StdioConn(name, OPTS.cmd)
        else:
            c = WsConn(name, OPTS.url)
        await c.open(**kw)
        self.conns.append(c)
        return c

    async def ready(self, name="A"):
        c = await self.conn(name)
        await c.handshake()
        return c

    async def close(self):
        for c in self.conns:
            await c.close()


SC = []


def scenario(ws_only=False):
    def deco(f):
        SC.append((f.__name__, f, ws_only))
        return f
    return deco


def start_params(pid, argv, cwd="file:///tmp", env=None, tty=False, **kw):
    p = {"processId": pid, "argv": argv, "cwd": cwd,
         "env": env if env is not None else {"PATH": "/usr/bin:/bin"}, "tty": tty}
    p.update(kw)
    return p


def is_notif(method, pid=None):
    return lambda m: isinstance(m, dict) and m.get("method") == method and (
        pid is None or (m.get("params") or {}).get("processId") == pid)


async def start(c, pid, argv, settle=0.0, **kw):
    return await c.request("process/start", start_params(pid, argv, **kw), settle=settle)


async def wait_closed(c, pid, timeout=5.0):
    return await c.wait(is_notif("process/closed", pid), timeout)


# ------------------------------------------------------------------ scenarios
@scenario()
async def handshake(E):
    c = await E.conn()
    await c.request("initialize", {"clientName": "wirecheck"})
    await c.notify("initialized", {})
    await c.request("process/read", {"processId": "nope"}, settle=0.3)


@scenario()
async def initialize_params_variants(E):
    c = await E.conn()
    await c.request("initialize", {}, settle=0.1)
    c = await E.conn("B")
    await c.request("initialize", None, omit_params=True, settle=0.1)
    c = await E.conn("C")
    await c.request("initialize", {"clientName": "x", "resumeSessionId": None, "extra": 1}, settle=0.1)


@scenario()
async def request_before_initialize(E):
    c = await E.conn()
    await c.request("process/read", {"processId": "x"})
    await c.request("process/start", start_params("p", ["/bin/true"]))
    await c.request("no/such/method", {})
    await c.request("initialize", {"clientName": "wirecheck"})
    await c.notify("initialized", {})
    await c.request("process/read", {"processId": "x"}, settle=0.3)


@scenario()
async def second_initialize(E):
    c = await E.ready()
    await c.request("initialize", {"clientName": "again"})
    await c.request("process/read", {"processId": "x"}, settle=0.3)


@scenario()
async def second_initialize_before_initialized(E):
    c = await E.conn()
    await c.request("initialize", {"clientName": "wirecheck"})
    await c.request("initialize", {"clientName": "again"}, settle=0.3)


@scenario()
async def request_between_initialize_and_initialized(E):
    c = await E.conn()
    await c.request("initialize", {"clientName": "wirecheck"})
    await c.request("process/read", {"processId": "x"})
    await c.notify("initialized", {})
    await c.request("process/read", {"processId": "x"}, settle=0.3)


@scenario()
async def pipelined_initialize_request_initialized(E):
    c = await E.conn()
    await c.send({"id": 1, "method": "initialize", "params": {"clientName": "wirecheck"}})
    await c.send({"id": 2, "method": "process/read", "params": {"processId": "x"}})
    await c.send({"method": "initialized", "params": {}})
    await c.send({"id": 3, "method": "process/read", "params": {"processId": "x"}})
    await c.settle(1.0)


@scenario()
async def initialized_before_initialize(E):
    c = await E.conn()
    await c.notify("initialized", {})
    await c.settle(1.0)
    if c.closed is None:
        await c.request("initialize", {"clientName": "wirecheck"}, settle=0.5)


@scenario()
async def initialized_twice(E):
    c = await E.ready()
    await c.notify("initialized", {})
    await c.settle(0.5)
    if c.closed is None:
        await c.request("process/read", {"processId": "x"}, settle=0.3)


@scenario()
async def unknown_method(E):
    c = await E.ready()
    await c.request("no/such/method", {"a": 1})
    await c.request("process/read", {"processId": "x"}, settle=0.3)


@scenario()
async def unknown_notification(E):
    c = await E.ready()
    await c.notify("no/such/notification", {})
    await c.settle(1.0)
    if c.closed is None:
        await c.request("process/read", {"processId": "x"}, settle=0.3)


@scenario()
async def unknown_notification_before_initialize(E):
    c = await E.conn()
    await c.notify("no/such/notification", {})
    await c.settle(1.0)
    if c.closed is None:
        await c.request("initialize", {"clientName": "wirecheck"}, settle=0.3)


@scenario()
async def malformed_json(E):
    c = await E.ready()
    for raw in ['{not json', '', '[]', '[1,2]', '42', '"str"', 'null', '{}', '{"id":5}',
                '{"id":8,"method":5}', '{"id":8,"method":"process/read","params":5}',
                '{"id":8,"method":"process/read","params":"x"}', '{"method":"process/read"}',
                '{"id":9,"method":"process/read","params":{"processId":"x"}}{"id":10}',
                '{"id":11,"method":"process/read","params":{"processId":"x"},"id":12}']:
        await c.send(raw)
        await c.settle(0.3)
        if c.closed is not None:
            return
    await c.request("process/read", {"processId": "x"}, settle=0.3)


@scenario()
async def client_sends_response_message(E):
    c = await E.ready()
    await c.send('{"id":6,"result":{}}')
    await c.settle(0.5)
    c = await E.ready("B")
    await c.send('{"id":7,"error":{"code":1,"message":"x"}}')
    await c.settle(0.5)
    c = await E.ready("C")
    await c.send('{"id":8,"result":{},"method":"process/read","params":{"processId":"x"}}')
    await c.settle(0.5)


@scenario()
async def notification_with_id_like_fields(E):
    c = await E.ready()
    await c.send({"method": "initialized"})  # second initialized without params
    await c.settle(0.3)
    if c.closed is None:
        await c.send({"method": "process/read", "params": {"processId": "x"}})  # request method sent as notification
        await c.settle(0.5)
    if c.closed is None:
        await c.request("process/read", {"processId": "x"}, settle=0.2)


@scenario(ws_only=True)
async def binary_frame(E):
    c = await E.conn()
    await c.send(json.dumps({"id": 1, "method": "initialize", "params": {"clientName": "bin"}}).encode())
    await c.settle(0.5)
    await c.send(json.dumps({"method": "initialized", "params": {}}).encode())
    await c.send(json.dumps({"id": 2, "method": "process/read", "params": {"processId": "x"}}).encode())
    await c.settle(0.5)
    await c.send(b"\xff\xfe not utf8")
    await c.settle(0.5)


@scenario()
async def wrong_param_types(E):
    c = await E.conn()
    await c.request("initialize", {"clientName": 5})
    await c.request("initialize", [], settle=0.1)
    c = await E.ready("B")
    await c.request("process/start", start_params("p", "sh -c true"))
    await c.request("process/start", start_params("p", ["true"], tty="yes"))
    await c.request("process/start", {"processId": "p", "argv": ["true"]})  # missing cwd/env/tty
    await c.request("process/start", start_params("p", ["true"], env=["A=1"]))
    await c.request("process/start", start_params(7, ["true"]))
    await c.request("process/read", {"processId": 5})
    await c.request("process/read", {"processId": "x", "afterSeq": -1})
    await c.request("process/read", {"processId": "x", "afterSeq": "1"})
    await c.request("process/write", {"processId": "x", "chunk": "not base64!!", "writeId": "w"})
    await c.request("process/terminate", {})
    await c.request("process/read", [], settle=0.1)
    await c.request("process/read", None, omit_params=True, settle=0.3)


@scenario()
async def id_variants(E):
    c = await E.ready()
    for id in ["abc", "", 7, 0, -5, 1.5, 2.0, None, 9223372036854775807, 18446744073709551615, -9223372036854775808,
               1e20, True, {"a": 1}, [1]]:
        await c.send({"id": id, "method": "process/read", "params": {"processId": "x"}})
        await c.settle(0.25)
        if c.closed is not None:
            return
    await c.send({"id": 100, "method": "process/read", "params": {"processId": "x"}, "jsonrpc": "2.0"})
    await c.settle(0.25)
    await c.send({"id": 101, "method": "process/read", "params": {"processId": "x"}, "jsonrpc": "1.0"})
    await c.settle(0.25)
    await c.send({"id": 102, "method": "process/read", "params": {"processId": "x"}, "extraField": 1})
    await c.settle(0.25)
    await c.send('{"id":103 , "method" : "process/read","params":{"processId":"x"}}  \n')
    await c.settle(0.25)


@scenario()
async def start_true(E):
    c = await E.ready()
    await start(c, "t1", ["/bin/true"])
    await wait_closed(c, "t1")
    await c.settle(0.3)
    await c.request("process/read", {"processId": "t1"}, settle=0.1)


@scenario()
async def start_exit3_out_err(E):
    c = await E.ready()
    await start(c, "e3", ["sh", "-c", "echo out; echo err >&2; exit 3"])
    await wait_closed(c, "e3")
    await c.settle(0.3)
    await c.request("process/read", {"processId": "e3"}, settle=0.1)


@scenario()
async def start_output_after_exit(E):
    c = await E.ready()
    await start(c, "late", ["sh", "-c", "(sleep 0.3; echo late) & echo early; exit 0"])
    await wait_closed(c, "late")
    await c.settle(0.3)
    await c.request("process/read", {"processId": "late"}, settle=0.1)


@scenario()
async def start_nonexistent(E):
    c = await E.ready()
    await start(c, "ne", ["/no/such/binary"], settle=0.3)
    await start(c, "ne2", ["no-such-command-xyz"], settle=0.3)
    await c.request("process/read", {"processId": "ne"})
    await start(c, "ne", ["/bin/true"])  # id reusable after spawn failure?
    await wait_closed(c, "ne")
    await c.settle(0.2)


@scenario()
async def start_bad_inputs(E):
    c = await E.ready()
    await start(c, "a", [])
    await start(c, "b", ["/bin/true"], cwd="/tmp")
    await start(c, "c", ["/bin/true"], cwd="file:tmp")
    await start(c, "d", ["/bin/true"], cwd="tmp")
    await start(c, "e", ["/bin/true"], cwd="http://x/tmp")
    await start(c, "f", ["/bin/true"], cwd="file:///no/such/dir", settle=0.3)
    await start(c, "g", ["/bin/true"], cwd="file://host/tmp", settle=0.3)
    await start(c, "h", [""], settle=0.3)
    await start(c, "", ["/bin/true"], settle=0.3)
    await c.settle(0.5)


@scenario()
async def start_env_cwd_arg0(E):
    c = await E.ready()
    await start(c, "env", ["/usr/bin/env"], env={"FOO": "bar"})
    await wait_closed(c, "env")
    await start(c, "pwd", ["/bin/pwd"], cwd="file:///tmp/../usr")
    await wait_closed(c, "pwd")
    await start(c, "pct", ["/bin/pwd"], cwd="file:///t%6Dp")
    await wait_closed(c, "pct")
    await start(c, "arg0", ["sh", "-c", "echo $0"], arg0="myname")
    await wait_closed(c, "arg0")
    await start(c, "stdin", ["sh", "-c", "cat; echo rc=$?"])
    await wait_closed(c, "stdin")
    await c.settle(0.3)


@scenario()
async def start_duplicate_id(E):
    c = await E.ready()
    await start(c, "dup", ["sleep", "2"])
    await start(c, "dup", ["/bin/true"])
    await c.request("process/terminate", {"processId": "dup"})
    await wait_closed(c, "dup")
    await start(c, "dup", ["/bin/true"], settle=0.5)  # after close but within retention


@scenario()
async def start_tty(E):
    c = await E.ready()
    await start(c, "tty", ["sh", "-c", "test -t 0 && echo tty; stty size"], tty=True)
    await wait_closed(c, "tty")
    await c.settle(0.3)
    await c.request("process/read", {"processId": "tty"})
    await start(c, "tty2", ["cat"], tty=True)
    await c.request("process/write", {"processId": "tty2", "chunk": b64("hello\n"), "writeId": "w1"}, settle=0.5)
    await c.request("process/write", {"processId": "tty2", "chunk": b64("\x04"), "writeId": "w2"})
    await wait_closed(c, "tty2")
    await c.settle(0.3)


@scenario()
async def pipe_stdin_cat(E):
    c = await E.ready()
    await start(c, "cat", ["cat"], pipeStdin=True)
    await c.request("process/write", {"processId": "cat", "chunk": b64("hello\n"), "writeId": "w1"})
    await c.wait(is_notif("process/output", "cat"), 3)
    await c.request("process/read", {"processId": "cat"})
    await c.request("process/write", {"processId": "cat", "chunk": b64("again\n"), "writeId": "w1"}, settle=0.5)
    await c.request("process/write", {"processId": "cat", "chunk": b64("x\n")})
    await c.request("process/write", {"processId": "cat", "chunk": b64("x\n"), "writeId": ""})
    await c.request("process/write", {"processId": "cat", "chunk": b64("x\n"), "writeId": None})
    await c.request("process/write", {"processId": "cat", "chunk": "", "writeId": "empty"}, settle=0.3)
    await c.request("process/write", {"processId": "nope", "chunk": b64("x"), "writeId": "w9"})
    await c.request("process/read", {"processId": "cat"})
    await c.request("process/terminate", {"processId": "cat"})
    await wait_closed(c, "cat")
    await c.request("process/write", {"processId": "cat", "chunk": b64("after\n"), "writeId": "w5"})
    await c.request("process/write", {"processId": "cat", "chunk": b64("after\n"), "writeId": "w1"}, settle=0.2)


@scenario()
async def write_without_pipe_stdin(E):
    c = await E.ready()
    await start(c, "np", ["sleep", "2"])
    await c.request("process/write", {"processId": "np", "chunk": b64("x\n"), "writeId": "w1"})
    await c.request("process/write", {"processId": "np", "chunk": b64("x\n"), "writeId": "w1"})
    await c.request("process/terminate", {"processId": "np"})
    await wait_closed(c, "np")
    await c.settle(0.2)


@scenario()
async def read_variants(E):
    c = await E.ready()
    await start(c, "r", ["sh", "-c", "printf aaaa; sleep 0.1; printf bbbbbb; sleep 0.1; printf cc; sleep 0.1"])
    await wait_closed(c, "r")
    await c.settle(0.2)
    await c.request("process/read", {"processId": "r"})
    await c.request("process/read", {"processId": "r", "afterSeq": 1})
    await c.request("process/read", {"processId": "r", "afterSeq": 100})
    await c.request("process/read", {"processId": "r", "maxBytes": 1})
    await c.request("process/read", {"processId": "r", "maxBytes": 10})
    await c.request("process/read", {"processId": "r", "maxBytes": 0})
    await c.request("process/read", {"processId": "r", "afterSeq": 1, "maxBytes": 6})
    await c.request("process/read", {"processId": "r", "waitMs": 500})
    await c.request("process/read", {"processId": "r", "afterSeq": 100, "waitMs": 500})
    await c.request("process/read", {"processId": "unknown"})
    await c.request("process/read", {"processId": "unknown", "waitMs": 300})


@scenario()
async def read_wait_for_output(E):
    c = await E.ready()
    await start(c, "w", ["sh", "-c", "sleep 0.5; echo later; sleep 0.5"])
    await c.request("process/read", {"processId": "w", "waitMs": 3000})
    await c.request("process/read", {"processId": "w", "afterSeq": 1, "waitMs": 3000})
    await c.request("process/read", {"processId": "w", "afterSeq": 2, "waitMs": 3000})
    await c.settle(0.3)


@scenario()
async def read_wait_timeout(E):
    c = await E.ready()
    await start(c, "s", ["sleep", "3"])
    await c.request("process/read", {"processId": "s", "waitMs": 400})
    await c.request("process/read", {"processId": "s", "waitMs": 0})
    await c.request("process/terminate", {"processId": "s"})
    await wait_closed(c, "s")


@scenario()
async def read_wait_blocks_other_requests(E):
    """Does a long-poll read delay other requests on the same connection?"""
    c = await E.ready()
    await start(c, "s", ["sleep", "3"])
    await c.send({"id": 900, "method": "process/read", "params": {"processId": "s", "waitMs": 1000}})
    await asyncio.sleep(0.05)
    await c.send({"id": 901, "method": "process/read", "params": {"processId": "nope"}})
    await c.wait(lambda m: m.get("id") == 900, 3)
    await c.settle(0.1)
    await c.request("process/terminate", {"processId": "s"})
    await wait_closed(c, "s")


@scenario()
async def terminate_variants(E):
    c = await E.ready()
    await start(c, "run", ["sleep", "5"])
    await c.request("process/terminate", {"processId": "run"})
    await wait_closed(c, "run")
    await c.settle(0.2)
    await c.request("process/terminate", {"processId": "run"})
    await c.request("process/terminate", {"processId": "unknown"})
    await start(c, "ex", ["/bin/true"])
    await wait_closed(c, "ex")
    await c.request("process/terminate", {"processId": "ex"})
    await c.request("process/read", {"processId": "run"}, settle=0.2)


@scenario()
async def terminate_process_group(E):
    c = await E.ready()
    await start(c, "grp", ["sh", "-c", "sleep 5 & sleep 5 & wait"])
    await asyncio.sleep(0.2)
    await c.request("process/terminate", {"processId": "grp"})
    await wait_closed(c, "grp", 8)
    await c.settle(0.2)


@scenario()
async def signal_variants(E):
    c = await E.ready()
    await start(c, "si", ["sleep", "5"])
    await c.request("process/signal", {"processId": "si", "signal": "interrupt"})
    await wait_closed(c, "si")
    await c.settle(0.2)
    await start(c, "st", ["sleep", "5"])
    await c.request("process/signal", {"processId": "st", "signal": "SIGTERM"}, settle=0.5)
    await c.request("process/signal", {"processId": "st", "signal": "terminate"}, settle=0.5)
    await c.request("process/signal", {"processId": "st", "signal": "bogus"})
    await c.request("process/signal", {"processId": "st", "signal": "TERM"}, settle=0.3)
    await c.request("process/signal", {"processId": "st", "signal": "kill"}, settle=0.3)
    await c.request("process/signal", {"processId": "st"})
    await c.request("process/signal", {"processId": "unknown", "signal": "interrupt"})
    await c.request("process/terminate", {"processId": "st"})
    await wait_closed(c, "st")
    await c.request("process/signal", {"processId": "st", "signal": "interrupt"})
    # trap handler: interrupt delivered to a shell that traps INT
    await start(c, "trap", ["sh", "-c", "trap 'echo got-int; exit 7' INT; echo ready; while :; do sleep 0.05; done"])
    await c.wait(is_notif("process/output", "trap"), 3)
    await c.request("process/signal", {"processId": "trap", "signal": "interrupt"})
    if await wait_closed(c, "trap", 3) is None:
        await c.request("process/terminate", {"processId": "trap"})
        await wait_closed(c, "trap")
    await c.settle(0.2)


@scenario()
async def kill_by_signal_exit(E):
    c = await E.ready()
    await start(c, "k9", ["sh", "-c", "kill -9 $$"])
    await wait_closed(c, "k9")
    await c.settle(0.2)
    await start(c, "k15", ["sh", "-c", "kill -15 $$"])
    await wait_closed(c, "k15")
    await c.settle(0.2)
    await c.request("process/read", {"processId": "k9"})


@scenario()
async def seq_ordering_many_chunks(E):
    c = await E.ready()
    await start(c, "many", ["sh", "-c", "for i in 1 2 3 4 5; do echo o$i; echo e$i >&2; sleep 0.02; done"])
    await wait_closed(c, "many")
    await c.settle(0.2)
    await c.request("process/read", {"processId": "many"})


@scenario(ws_only=True)
async def resume(E):
    a = await E.conn("A")
    r = await a.handshake()
    sid = (r or {}).get("result", {}).get("sessionId")
    # output at ~0s (attached), ~0.6s (detached), ~1.6s (after resume, before `initialized`),
    # ~2.6s (after `initialized`)
    await start(a, "bg", ["sh", "-c", "echo one; sleep 0.6; echo two; sleep 1; echo three; sleep 1; echo four"])
    await start(a, "idle", ["sleep", "30"])
    await a.wait(is_notif("process/output", "bg"), 3)
    # resume while A is still attached
    b = await E.conn("B")
    await b.request("initialize", {"clientName": "wirecheck", "resumeSessionId": sid}, settle=0.1)
    # resume an unknown id / a non-uuid
    u = await E.conn("U")
    await u.request("initialize", {"clientName": "wirecheck",
                                   "resumeSessionId": "00000000-0000-4000-8000-000000000000"}, settle=0.1)
    u2 = await E.conn("U2")
    await u2.request("initialize", {"clientName": "wirecheck", "resumeSessionId": "not-a-uuid"}, settle=0.1)
    await a.close()
    await asyncio.sleep(0.9)  # 'two' is emitted while detached
    cc = await E.conn("C")
    await cc.request("initialize", {"clientName": "wirecheck", "resumeSessionId": sid})
    await cc.request("process/read", {"processId": "bg"})  # before initialized -> ?
    await cc.settle(1.0)  # 'three' happens now: is it notified before `initialized`?
    await cc.notify("initialized", {})
    await cc.wait(is_notif("process/closed", "bg"), 4)
    await cc.settle(0.2)
    await cc.request("process/read", {"processId": "bg"})
    await cc.request("process/read", {"processId": "idle"})
    # resume while C attached -> -32010; then C closes and D2 resumes
    d = await E.conn("D")
    await d.request("initialize", {"clientName": "wirecheck", "resumeSessionId": sid}, settle=0.1)
    await cc.request("process/terminate", {"processId": "idle"})
    await cc.wait(is_notif("process/closed", "idle"), 3)
    await cc.close()
    await asyncio.sleep(0.3)
    d2 = await E.conn("D2")
    await d2.request("initialize", {"clientName": "wirecheck", "resumeSessionId": sid}, settle=0.1)
    await d2.notify("initialized", {})
    await d2.request("process/read", {"processId": "idle"}, settle=0.1)
    await d2.request("process/start", start_params("idle", ["/bin/true"]), settle=0.1)


@scenario(ws_only=True)
async def resume_old_connection_requests(E):
    """Whether a takeover is possible while the old connection is open (and what the old one sees)."""
    a = await E.conn("A")
    r = await a.handshake()
    sid = (r or {}).get("result", {}).get("sessionId")
    await start(a, "s", ["sleep", "3"])
    await a.send({"id": 50, "method": "process/read", "params": {"processId": "s", "waitMs": 2500}})
    await asyncio.sleep(0.1)
    b = await E.conn("B")
    await b.request("initialize", {"clientName": "wirecheck", "resumeSessionId": sid}, settle=0.2)
    await a.request("process/read", {"processId": "s"}, timeout=4, settle=0.2)
    await a.request("process/terminate", {"processId": "s"})
    await a.wait(is_notif("process/closed", "s"), 3)
    await a.settle(0.3)


@scenario()
async def huge_frame(E):
    c = await E.ready()
    for n in (262000, 300000):
        zeros = ",".join(["0"] * n)
        raw = '{"id":%d,"method":"process/read","params":{"processId":"x","junk":[%s]}}' % (n, zeros)
        await c.send(raw, log="<process/read id=%d with %d-zero array in params, %d bytes>" % (n, n, len(raw)))
        await c.settle(1.0)
        if c.closed is not None:
            return
    await c.request("process/read", {"processId": "x"}, settle=0.3)


@scenario()
async def fs_smoke(E):
    c = await E.ready()
    await c.request("fs/readFile", {"path": "file:///no/such/file"})
    await c.request("fs/readFile", {"path": "/etc/hostname"})
    await c.request("fs/getMetadata", {"path": "file:///tmp"})
    await c.request("fs/canonicalize", {"path": "file:///tmp/../tmp"}, settle=0.1)


@scenario()
async def timing_true_to_closed(E):
    c = await E.ready()
    samples = []
    for i in range(5):
        t0 = time.monotonic()
        await start(c, "t%d" % i, ["/bin/true"])
        if await wait_closed(c, "t%d" % i) is not None:
            samples.append((time.monotonic() - t0) * 1000)
    samples.sort()
    note("start(/bin/true)->process/closed ms", samples=[round(s, 1) for s in samples],
         p50=round(samples[len(samples) // 2], 1) if samples else None, timing=True)


@scenario()
async def timing_write_echo(E):
    c = await E.ready()
    await start(c, "cat", ["cat"], pipeStdin=True)
    samples = []
    for i in range(7):
        mark = len(c.msgs)
        t0 = time.monotonic()
        await c.send({"id": 1000 + i, "method": "process/write",
                      "params": {"processId": "cat", "chunk": b64("ping%d\n" % i), "writeId": "t%d" % i}})
        if await c.wait(is_notif("process/output", "cat"), 3, mark) is not None:
            samples.append((time.monotonic() - t0) * 1000)
        await c.settle(0.05)
    samples.sort()
    note("process/write -> process/output echo ms", samples=[round(s, 1) for s in samples],
         p50=round(samples[len(samples) // 2], 1) if samples else None, timing=True)
    await c.request("process/terminate", {"processId": "cat"})
    await wait_closed(c, "cat")


SLOW = set()


def slow(f):
    SLOW.add(f.__name__)
    return f


@scenario(ws_only=True)
@slow
async def slow_detach_ttl_and_retention(E):
    """Resume after 25 s (expect ok) vs 33 s (expect expiry); closed-process retention at 28 s / 33 s."""
    a = await E.conn("A")
    ra = await a.handshake()
    sa = (ra or {}).get("result", {}).get("sessionId")
    await start(a, "run", ["sleep", "60"])
    b = await E.conn("B")
    rb = await b.handshake()
    sb = (rb or {}).get("result", {}).get("sessionId")
    await start(b, "run", ["sleep", "60"])
    r = await E.conn("R")
    await r.handshake()
    await start(r, "gone", ["/bin/true"])
    await wait_closed(r, "gone")
    t0 = time.monotonic()
    await a.close()
    await b.close()
    await asyncio.sleep(25 - (time.monotonic() - t0))
    a2 = await E.conn("A2")
    await a2.handshake(resume=sa)
    await a2.request("process/read", {"processId": "run"})
    await asyncio.sleep(28 - (time.monotonic() - t0))
    await r.request("process/read", {"processId": "gone"})
    await asyncio.sleep(33 - (time.monotonic() - t0))
    await r.request("process/read", {"processId": "gone"})
    await r.request("process/start", start_params("gone", ["/bin/true"]), settle=0.3)
    b2 = await E.conn("B2")
    await b2.handshake(resume=sb)
    await b2.settle(0.3)
    await a2.request("process/terminate", {"processId": "run"})
    await a2.settle(0.3)


# ----------------------------------------------------------- HTTP-level checks
def http_raw(host, port, req, timeout=3.0):
    s = socket.create_connection((host, port), timeout=timeout)
    s.sendall(req.encode())
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    s.close()
    head = data.split(b"\r\n\r\n")[0].decode("latin1")
    lines = head.split("\r\n")
    hdrs = sorted(l.split(":")[0].lower() for l in lines[1:] if l and not l.lower().startswith("date"))
    return {"status_line": lines[0] if lines else None, "headers": hdrs}


@scenario(ws_only=True)
async def http_checks(E):
    from urllib.parse import urlparse
    u = urlparse(OPTS.url)
    h, p = u.hostname, u.port
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    up = ("Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
          "Sec-WebSocket-Key: %s\r\n" % key)
    cases = {
        "GET /readyz": "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /": "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /nope": "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /readyz Origin": "GET /readyz HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.example\r\n\r\n",
        "POST /readyz": "POST /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        "upgrade /": "GET / HTTP/1.1\r\nHost: x\r\n" + up + "\r\n",
        "upgrade /other": "GET /other HTTP/1.1\r\nHost: x\r\n" + up + "\r\n",
        "upgrade / Origin": "GET / HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.example\r\n" + up + "\r\n",
        "upgrade / Origin null": "GET / HTTP/1.1\r\nHost: x\r\nOrigin: null\r\n" + up + "\r\n",
        "upgrade / Origin localhost": "GET / HTTP/1.1\r\nHost: x\r\nOrigin: http://127.0.0.1\r\n" + up + "\r\n",
    }
    for name, req in cases.items():
        try:
            r = await asyncio.get_event_loop().run_in_executor(None, http_raw, h, p, req)
        except Exception as e:
            r = {"error": repr(e)}
        emit(dict(dir="http", case=name, result=r))


@scenario(ws_only=True)
async def server_pings(E):
    """Raw WS client that records control frames for OPTS.ping_wait seconds (skipped if 0)."""
    if not OPTS.ping_wait:
        note("skipped (use --ping-wait 35)")
        return
    from urllib.parse import urlparse
    u = urlparse(OPTS.url)
    r, w = await asyncio.open_connection(u.hostname, u.port)
    w.write(("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
             "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode())
    await r.readuntil(b"\r\n\r\n")
    t0 = time.monotonic()
    end = t0 + OPTS.ping_wait
    while True:
        rem = end - time.monotonic()
        if rem <= 0:
            break
        try:
            hdr = await asyncio.wait_for(r.readexactly(2), rem)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError):
            break
        op = hdr[0] & 0x0F
        ln = hdr[1] & 0x7F
        if ln == 126:
            ln = int.from_bytes(await r.readexactly(2), "big")
        elif ln == 127:
            ln = int.from_bytes(await r.readexactly(8), "big")
        payload = await r.readexactly(ln)
        emit(dict(dir="event", event="frame", opcode=op, len=ln, payload=payload[:64].hex(),
                  t_ms=round((time.monotonic() - t0) * 1000)))
        if op == 8:
            break
    note("ping watch ended", waited_s=round(time.monotonic() - t0, 1))
    w.close()


# ---------------------------------------------------------------------- main
async def run():
    names = [n for n, _, _ in SC]
    only = set(OPTS.only.split(",")) if OPTS.only else None
    skip = set(OPTS.skip.split(",")) if OPTS.skip else set()
    for name, fn, ws_only in SC:
        if (only and name not in only) or name in skip:
            continue
        if name in SLOW and not OPTS.slow and not only:
            continue
        CURRENT["scenario"] = name
        if ws_only and OPTS.stdio:
            note("skipped: ws-only scenario")
            continue
        emit(dict(dir="begin"))
        E = Env()
        try:
            await asyncio.wait_for(fn(E), OPTS.scenario_timeout)
        except asyncio.TimeoutError:
            note("scenario timed out")
        except Exception as e:
            note("scenario raised %r" % (e,))
        finally:
            await E.close()
        emit(dict(dir="end"))


def main():
    global OPTS, OUT
    argv = sys.argv[1:]
    cmd = []
    if "--" in argv:
        i = argv.index("--")
        argv, cmd = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="ws://host:port of a running server")
    ap.add_argument("--stdio", action="store_true", help="spawn `-- CMD ARGS...` per scenario, talk NDJSON on stdio")
    ap.add_argument("--out", help="also write the transcript (JSONL) here")
    ap.add_argument("--only", help="comma-separated scenario names")
    ap.add_argument("--skip", help="comma-separated scenario names to skip")
    ap.add_argument("--list", action="store_true", help="list scenarios and exit")
    ap.add_argument("--raw", action="store_true", help="do not normalise ids/environmentInfo")
    ap.add_argument("--no-times", action="store_true", help="omit t_ms (diff-friendly)")
    ap.add_argument("--ping-wait", type=float, default=0, help="seconds to watch for server pings (server_pings)")
    ap.add_argument("--slow", action="store_true", help="also run slow scenarios (~35 s each)")
    ap.add_argument("--scenario-timeout", type=float, default=60)
    OPTS = ap.parse_args(argv)
    OPTS.cmd = cmd
    if OPTS.list:
        for n, _, w in SC:
            print(n + ("  (ws only)" if w else ""))
        return
    if bool(OPTS.url) == bool(OPTS.stdio) or (OPTS.stdio and not cmd):
        ap.error("give exactly one of --url URL or --stdio -- CMD ARGS...")
    if OPTS.out:
        OUT = open(OPTS.out, "w")
    asyncio.run(run())
    if OUT:
        OUT.close()


if __name__ == "__main__":
    main()
