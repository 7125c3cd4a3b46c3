#!/usr/bin/env python3
"""Start IBM ContextForge (PyPI `mcp-contextforge-gateway`) as a benchmark peer.

    .venv-peer/bin/python tests/bench/peer/start.py UPSTREAM_URL [--workers N] [--name NAME] [--stateful]
    .venv-peer/bin/python tests/bench/peer/start.py --prepare     (install.sh: build the DB template)

Runs in the foreground until SIGTERM/SIGINT. Steps, each with a bounded wait:
  1. a temporary dir under $TMPDIR with the SQLite database (a copy of the migrated template in
     the venv, the admin's password reset) and the gunicorn config;
  2. gunicorn + uvicorn workers on 127.0.0.1:<free port>, memory cache, no Redis;
  3. logs in as the platform admin (POST /v1/auth/email/login) to get a JWT;
  4. registers UPSTREAM_URL as a gateway (POST /v1/gateways, transport STREAMABLEHTTP);
  5. creates a virtual server with every tool of that gateway (POST /v1/servers), and warms
     the workers up with a few initialize + tools/list requests;
  6. prints exactly two stdout lines:
       listening on http://127.0.0.1:PORT/servers/<server id>/mcp
       key: <JWT>
On SIGTERM/SIGINT it stops gunicorn (its master stops the workers), SIGKILLs the process
group if that takes longer than 10 s, and removes the temp dir. Diagnostics go to stderr.
See README.md beside this file for the settings and why.
"""

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

# Gunicorn config written into the temp dir: the same shape as ContextForge's own production
# gunicorn.config.py (uvicorn workers, --preload, per-worker SQLAlchemy pool reset after fork),
# minus its info-level hook logging.
GUNICORN_CONF = """
bind = "127.0.0.1:{port}"
workers = {workers}
worker_class = "uvicorn.workers.UvicornWorker"
preload_app = True
timeout = 600
graceful_timeout = 5
max_requests = 0            # never recycle workers during a run
accesslog = None            # ContextForge's run-gunicorn.sh disables access logs for performance
errorlog = "-"
loglevel = "warning"
control_socket_disable = True


def post_fork(server, worker):
    try:
        from mcpgateway.db import engine
        engine.dispose(close=False)
    except Exception as e:  # noqa: BLE001
        server.log.warning("engine.dispose after fork failed: %s", e)
    try:
        from mcpgateway.utils.redis_client import _reset_client
        _reset_client()
    except Exception:  # noqa: BLE001
        pass


def on_exit(server):
    # also when start.py was SIGKILLed (the master then gets SIGTERM via PR_SET_PDEATHSIG)
    import shutil
    shutil.rmtree({work!r}, ignore_errors=True)
"""


def log(msg: str) -> None:
    print(f"[bench/peer] {msg}", file=sys.stderr, flush=True)


def die_with_parent() -> None:
    """preexec_fn: the gunicorn master gets SIGTERM if start.py dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body=None, token: str | None = None, timeout: float = 30.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")


def mcp_post(url: str, token: str, body: dict, session: str | None = None, timeout: float = 30.0):
    """One MCP request (new connection); returns (status, Mcp-Session-Id or None)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    req.add_header("Accept", "application/json, text/event-stream")
    req.add_header("Authorization", f"Bearer {token}")
    if session:
        req.add_header("Mcp-Session-Id", session)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status, r.headers.get("Mcp-Session-Id")
    except urllib.error.HTTPError as e:
        e.read()
        return e.code, None
    except OSError:
        return 0, None


def warm_up(url: str, token: str) -> None:
    """Each worker builds FastAPI's route table lazily on its first requests (about a second of
    CPU here); do that now, not in the first measured seconds. Concurrent requests on separate
    connections so that every worker gets some; bounded; errors are ignored."""
    from concurrent.futures import ThreadPoolExecutor

    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "warm-up", "version": "0"}}}

    def one(_):
        st, sid = mcp_post(url, token, init)
        if st == 200:
            mcp_post(url, token, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
            mcp_post(url, token, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, sid)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, range(24)))


def peer_env(work: str, port: int, admin_email: str, admin_password: str, stateful: bool = False) -> dict:
    """ContextForge settings (environment variables; no .env file is read: cwd is the temp dir)."""
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCPGATEWAY_", "MCG_"))}
    env.update({
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "APP_DOMAIN": base,
        "DATABASE_URL": f"sqlite:///{work}/mcp.db",
        "CACHE_TYPE": "memory",               # no Redis
        "ENVIRONMENT": "production",
        "DEV_MODE": "false",
        "RELOAD": "false",
        "DEBUG": "false",
        "LOG_LEVEL": "ERROR",
        "LOG_REQUESTS": "false",
        "LOG_TO_FILE": "false",
        # auth: JWT bearer tokens (HS256) for the platform admin (see set_password)
        "AUTH_REQUIRED": "true",
        "MCP_CLIENT_AUTH_ENABLED": "true",
        "JWT_SECRET_KEY": secrets.token_urlsafe(48),
        "AUTH_ENCRYPTION_SECRET": secrets.token_urlsafe(48),
        "BASIC_AUTH_USER": "admin",
        "BASIC_AUTH_PASSWORD": secrets.token_urlsafe(24),
        "EMAIL_AUTH_ENABLED": "true",
        "PLATFORM_ADMIN_EMAIL": admin_email,
        "PLATFORM_ADMIN_PASSWORD": admin_password,
        # the login JWT would otherwise expire after 20 min (and, with no Redis to track activity,
        # be refused 60 min after login): make the key good for 24 h (the maximum of both)
        "TOKEN_EXPIRY": "1440",
        "TOKEN_IDLE_TIMEOUT": "1440",
        "ADMIN_REQUIRE_PASSWORD_CHANGE_ON_BOOTSTRAP": "false",
        "PASSWORD_CHANGE_ENFORCEMENT_ENABLED": "false",
        # admin REST API on (to register the upstream), the web UI off
        "MCPGATEWAY_UI_ENABLED": "false",
        "MCPGATEWAY_ADMIN_API_ENABLED": "true",
        # the upstream is on loopback: let the gateway reach it
        "SSRF_ALLOW_LOCALHOST": "true",
        "SSRF_ALLOW_PRIVATE_NETWORKS": "true",
        # Every tools/call builds a new httpx client for the upstream. For an http:// upstream
        # ContextForge means to skip TLS setup (tool_service.get_httpx_client_factory: "For plain
        # HTTP gateway URLs, skip SSL context entirely"), but then passes verify=True, so httpx
        # still loads the CA bundle on every call: ~half the worker's CPU in a profile. With
        # verify=False no CA bundle is loaded. The upstream is plain HTTP on loopback, so no TLS
        # is involved either way.
        "SKIP_SSL_VERIFY": "true",
        # the default rate limiter (100 req/min on MCP endpoints) would cap a benchmark
        "RATE_LIMITING_ENABLED": "false",
        # Streamable HTTP with JSON responses (the default). Stateless (the default): no
        # Mcp-Session-Id, and each tools/call opens a new upstream MCP session. Stateful: the peer
        # issues Mcp-Session-Id and reuses one upstream session per downstream session.
        "USE_STATEFUL_SESSIONS": "true" if stateful else "false",
        "JSON_RESPONSE_ENABLED": "true",
        # no periodic health probes of the upstream during a run
        "HEALTH_CHECK_INTERVAL": "3600",
        "PLUGINS_ENABLED": "false",
        "OBSERVABILITY_ENABLED": "false",
        "OTEL_ENABLE_OBSERVABILITY": "false",
    })
    return env


ADMIN_EMAIL = "bench@example.com"
BOOTSTRAP = "import asyncio; from mcpgateway.bootstrap_db import main; asyncio.run(main())"


def ensure_template(env: dict) -> str | None:
    """A migrated, seeded SQLite database kept in the venv, one per ContextForge version.

    A fresh database takes ~15 s of Alembic migrations at every start; copying a database that is
    already at head lets ContextForge take its fast path. The template holds no secret: its only
    user, ADMIN_EMAIL, has a random password that is replaced at each start (set_password).
    Returns the path, or None (then the start migrates a fresh database, ~15 s more).
    """
    from importlib.metadata import version

    path = os.path.join(sys.prefix, f"contextforge-{version('mcp-contextforge-gateway')}.db")
    if os.path.exists(path):
        return path
    tmpdir = tempfile.mkdtemp(prefix="portcullis-peer-template.", dir=os.environ.get("TMPDIR") or None)
    try:
        tenv = dict(env)
        tenv.update({
            "DATABASE_URL": f"sqlite:///{tmpdir}/template.db",
            "PLATFORM_ADMIN_EMAIL": ADMIN_EMAIL,
            "PLATFORM_ADMIN_PASSWORD": "T-" + secrets.token_urlsafe(24),
        })
        log(f"building the database template {path} (once per version, ~15 s)")
        r = subprocess.run([sys.executable, "-c", BOOTSTRAP], cwd=tmpdir, env=tenv, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
        if r.returncode != 0:
            log(f"template build failed ({r.returncode}); migrating a fresh database instead:\n"
                + r.stderr.decode(errors="replace")[-2000:])
            return None
        tmp = f"{path}.{os.getpid()}.tmp"
        shutil.copyfile(f"{tmpdir}/template.db", tmp)
        os.replace(tmp, path)  # atomic: concurrent starts never see half a file
        return path
    except (OSError, subprocess.TimeoutExpired) as e:
        log(f"template build failed ({e}); migrating a fresh database instead")
        return None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def set_password(db: str, email: str, password: str) -> None:
    """Give the user a fresh argon2id password hash (ContextForge's own parameters)."""
    import sqlite3

    from argon2 import PasswordHasher

    digest = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=1).hash(password)
    with sqlite3.connect(db) as c:
        n = c.execute("UPDATE email_users SET password_hash = ?, password_hash_type = 'argon2id', "
                      "password_change_required = 0 WHERE email = ?", (digest, email)).rowcount
    if n != 1:
        raise RuntimeError(f"template database has no user {email}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("upstream_url", nargs="?", help="Streamable HTTP MCP server, e.g. http://127.0.0.1:PORT/mcp")
    ap.add_argument("--prepare", action="store_true",
                    help="only build the database template in the venv (install.sh runs this) and exit")
    # 2 workers on this 2-core machine: one per core. Uvicorn workers are async and CPU-bound here
    # (loopback upstream), so more processes than cores only add context switches and memory.
    # ContextForge's gunicorn.config.py also defaults to 2; its run-gunicorn.sh "auto" (2*CPU+1 = 5)
    # is a sync-worker rule of thumb. Override with --workers or PEER_WORKERS.
    ap.add_argument("--workers", type=int, default=int(os.environ.get("PEER_WORKERS", "2")),
                    help="gunicorn workers (also PEER_WORKERS; default 2)")
    ap.add_argument("--name", default=os.environ.get("PEER_GATEWAY_NAME", "upstream"),
                    help="gateway name; tools are exposed as <slug(name)>-<tool> (default: upstream)")
    ap.add_argument("--stateful", action="store_true", default=os.environ.get("PEER_STATEFUL") == "1",
                    help="USE_STATEFUL_SESSIONS=true (also PEER_STATEFUL=1); see README.md")
    ap.add_argument("--startup-timeout", type=float, default=120.0)
    args = ap.parse_args()
    if args.prepare:
        with tempfile.TemporaryDirectory(prefix="portcullis-peer.", dir=os.environ.get("TMPDIR") or None) as w:
            return 0 if ensure_template(peer_env(w, 4444, ADMIN_EMAIL, "unused")) else 1
    if not args.upstream_url:
        ap.error("UPSTREAM_URL is required")

    venv_bin = os.path.dirname(os.path.abspath(sys.executable))
    gunicorn = os.path.join(venv_bin, "gunicorn")
    if not os.path.exists(gunicorn):
        log(f"{gunicorn} not found: run tests/bench/peer/install.sh and use .venv-peer/bin/python")
        return 1

    work = tempfile.mkdtemp(prefix="portcullis-peer.", dir=os.environ.get("TMPDIR") or None)
    proc: subprocess.Popen | None = None

    def stop(*_):
        raise SystemExit(0)  # runs the finally below

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, stop)

    try:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        admin_email = ADMIN_EMAIL
        admin_password = "Bench-" + secrets.token_urlsafe(18)
        env = peer_env(work, port, admin_email, admin_password, args.stateful)
        db = os.path.join(work, "mcp.db")
        template = ensure_template(env)
        if template:
            # The template's admin user becomes this run's admin with this run's password. (Letting
            # the workers' startup bootstrap create a new admin on a database already at head does
            # not work in 1.0.7: it fails with "Instance <EmailUser> has been deleted".)
            shutil.copyfile(template, db)
            set_password(db, admin_email, admin_password)
        conf = os.path.join(work, "gunicorn_conf.py")
        with open(conf, "w") as f:
            f.write(GUNICORN_CONF.format(port=port, workers=args.workers, work=work))

        log(f"starting ContextForge on {base} with {args.workers} workers, data in {work}")
        proc = subprocess.Popen(
            [gunicorn, "-c", conf, "mcpgateway.main:app"],
            cwd=work,  # no stray .env from the caller's directory
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr,
            stderr=sys.stderr,
            start_new_session=True,  # own process group: killpg reaches master and workers
            preexec_fn=die_with_parent,
        )

        t0 = time.monotonic()
        # 1. wait for readiness (bounded)
        deadline = time.monotonic() + args.startup_timeout
        while True:
            if proc.poll() is not None:
                log(f"gunicorn exited with {proc.returncode} during startup")
                return 1
            try:
                st, _ = http("GET", f"{base}/health", timeout=2)
                if st == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                log(f"not ready after {args.startup_timeout:.0f} s")
                return 1
            time.sleep(0.25)

        log(f"healthy after {time.monotonic() - t0:.1f} s")
        # 2. token: log in as the platform admin (bounded retries: a worker may still be booting)
        token = None
        for _ in range(40):
            st, body = http("POST", f"{base}/v1/auth/email/login", {"email": admin_email, "password": admin_password})
            if st == 200 and isinstance(body, dict) and body.get("access_token"):
                token = body["access_token"]
                break
            time.sleep(0.25)
        if not token:
            log(f"login failed: {st} {body}")
            return 1

        # 3. register the upstream
        st, gw = http("POST", f"{base}/v1/gateways", {
            "name": args.name,
            "url": args.upstream_url,
            "transport": "STREAMABLEHTTP",
            "description": "benchmark upstream",
        }, token=token, timeout=60)
        if st not in (200, 201) or not isinstance(gw, dict):
            log(f"POST /gateways failed: {st} {gw}")
            return 1
        gw_id = gw["id"]

        # 4. its tools (bounded wait: discovery happens during registration)
        tool_ids, tool_names = [], []
        for _ in range(40):
            st, tools = http("GET", f"{base}/v1/tools?gateway_id={gw_id}&limit=0&include_pagination=false", token=token)
            if st == 200:
                items = tools.get("items", tools) if isinstance(tools, dict) else tools
                items = [t for t in items if t.get("gatewayId", t.get("gateway_id")) == gw_id]
                tool_ids = [t["id"] for t in items]
                tool_names = [t["name"] for t in items]
                if tool_ids:
                    break
            time.sleep(0.25)
        if not tool_ids:
            log(f"no tools discovered for gateway {gw_id}: {st} {tools}")
            return 1

        # 5. a virtual server exposing all of them
        st, srv = http("POST", f"{base}/v1/servers", {
            "server": {"name": f"bench-{args.name}", "description": "benchmark", "associated_tools": tool_ids},
            "visibility": "public",
        }, token=token)
        if st not in (200, 201) or not isinstance(srv, dict):
            log(f"POST /servers failed: {st} {srv}")
            return 1
        srv_id = srv["id"]
        mcp_url = f"{base}/servers/{srv_id}/mcp"
        warm_up(mcp_url, token)
        log(f"ready after {time.monotonic() - t0:.1f} s")
        log(f"gateway {gw_id} with {len(tool_ids)} tools (e.g. {', '.join(sorted(tool_names)[:3])}); server {srv_id}")

        print(f"listening on {mcp_url}", flush=True)
        print(f"key: {token}", flush=True)

        # 6. foreground until killed; if gunicorn dies, so do we
        while proc.poll() is None:
            time.sleep(0.5)
        log(f"gunicorn exited with {proc.returncode}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # gunicorn master stops its workers
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # anything left in the group
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
