"""Console benchmark: the first screen's script and how fast it appears on a slow phone.

    .venv/bin/python bench/console_bench.py [--kbps 400] [--latency 400] [--cpu 4] [--runs 3]

Needs the built console (`make console`) and /usr/bin/chromium. Serves web/dist through the
gateway's own console routes (same headers, CSP and caching as `make up`) on a free port, then
reports:
  - every script and stylesheet the first screen loads: raw bytes and gzip -9 bytes, and the
    total against the 200 KB (compressed) budget;
  - time to first screen (the sign-in form's email input visible) in headless Chromium with
    DevTools network emulation (default ~"slow 3G": 400 kbit/s down, 400 ms latency) and a 4x
    CPU slowdown, cold cache, median of --runs.
"""

from __future__ import annotations

import argparse
import gzip
import re
import statistics
import sys
import threading
import time
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from doorward_kit.net import free_port  # noqa: E402
from gateway.console import console_routes  # noqa: E402

DIST = ROOT / "web" / "dist"
BUDGET = 200 * 1024
ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]


def first_screen_files() -> list[Path]:
    html = (DIST / "index.html").read_text()
    names = re.findall(r'(?:src|href)="/(assets/[^"]+\.(?:js|css))"', html)
    return [DIST / n for n in names]


def sizes() -> int:
    total_js_gz = 0
    print(f"{'file':44} {'raw':>9} {'gzip':>9}")
    for f in first_screen_files():
        raw = f.read_bytes()
        gz = len(gzip.compress(raw, 9))
        if f.suffix == ".js":
            total_js_gz += gz
        print(f"{f.relative_to(DIST)!s:44} {len(raw):9,d} {gz:9,d}")
    verdict = "within" if total_js_gz < BUDGET else "OVER"
    print(f"first-screen script, gzip: {total_js_gz:,d} bytes ({total_js_gz / 1024:.1f} KB), "
          f"{verdict} the {BUDGET // 1024} KB budget")
    return total_js_gz


def serve(port: int) -> uvicorn.Server:
    app = Starlette(routes=console_routes(DIST, "http://127.0.0.1:9"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server


def first_screen(url: str, kbps: int, latency: int, cpu: int, runs: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    times: list[float] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        try:
            for _ in range(runs):
                context = browser.new_context(viewport={"width": 360, "height": 740})
                page = context.new_page()
                cdp = context.new_cdp_session(page)
                cdp.send("Network.enable")
                cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
                cdp.send("Network.emulateNetworkConditions", {
                    "offline": False, "latency": latency,
                    "downloadThroughput": kbps * 1000 / 8, "uploadThroughput": kbps * 1000 / 8,
                })
                cdp.send("Emulation.setCPUThrottlingRate", {"rate": cpu})
                started = time.perf_counter()
                page.goto(url, wait_until="commit")
                page.locator("input[name=email]").wait_for(state="visible", timeout=120_000)
                times.append(time.perf_counter() - started)
                context.close()
        finally:
            browser.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kbps", type=int, default=400, help="download/upload, kbit/s")
    parser.add_argument("--latency", type=int, default=400, help="round-trip latency, ms")
    parser.add_argument("--cpu", type=int, default=4, help="CPU slowdown factor")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not (DIST / "index.html").exists():
        sys.exit("web/dist is missing: build the console first (make console; needs Node.js 20+)")
    if not Path("/usr/bin/chromium").exists():
        sys.exit("/usr/bin/chromium is missing: apt-get install -y chromium")
    sizes()
    port = free_port()
    server = serve(port)
    try:
        times = first_screen(f"http://127.0.0.1:{port}/", args.kbps, args.latency, args.cpu,
                             args.runs)
    finally:
        server.should_exit = True
    print(f"time to first screen ({args.kbps} kbit/s, {args.latency} ms RTT, {args.cpu}x CPU, "
          f"cold cache, 360 px): median {statistics.median(times):.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
