"""Open a Snakemake report in headless Chromium and list the figures it actually shows.

The report is a JavaScript app: results appear only after clicking through it. A copy of the
page gets a small script that, once the app has rendered, clicks the category (a sweep), its
"figures" subcategory and each result's view button, and records every PNG the page then
displays (name and decoded width) in an attribute of <body>; --dump-dom returns it.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

PROBE = """
<script>
(async function () {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const done = (v) => document.body.setAttribute("data-probe", JSON.stringify(v));
  const leaf = (t) => [...document.querySelectorAll("#app *")].filter(
    (e) => e.children.length === 0 && e.textContent.trim() === t);
  try {
    for (let i = 0; i < 200 && !leaf(CATEGORY).length; i++) await sleep(100);
    if (!leaf(CATEGORY).length) return done({error: "category not in the report"});
    leaf(CATEGORY)[0].click(); await sleep(300);
    if (!leaf("figures").length) return done({error: "no figures subcategory"});
    leaf("figures")[0].click(); await sleep(300);
    const shown = {};
    const eyes = [...document.querySelectorAll("a[iconname=eye]")];
    for (const eye of eyes) {
      const name = eye.closest("tr").querySelector("td").textContent.trim();
      eye.click();
      let img = null;
      for (let i = 0; i < 50 && !img; i++) {
        await sleep(100);
        img = [...document.querySelectorAll("img")].find(
          (e) => e.src.startsWith("data:image/png") && e.complete && e.naturalWidth > 0 &&
                 e.src.includes(name.split("/").pop()));
      }
      shown[name] = img ? img.naturalWidth : 0;
    }
    done({figures: shown, title: document.title});
  } catch (e) { done({error: String(e)}); }
})();
</script>
"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def shown_figures(report: Path, category: str, workdir: Path, chromium: str) -> dict:
    """{result path: displayed width in px} for the PNGs shown under one report category."""
    page = report.read_text()
    cut = page.rindex("</body>")
    probe = PROBE.replace("CATEGORY", json.dumps(category))
    probed = workdir / f"probe_{re.sub(r'[^A-Za-z0-9_]', '_', category)}.html"
    probed.write_text(page[:cut] + probe + page[cut:])
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--no-first-run",
            f"--user-data-dir={workdir / 'chromium-profile'}",
            "--virtual-time-budget=60000",
            "--dump-dom",
            probed.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    m = re.search(r'<body[^>]*data-probe="([^"]*)"', proc.stdout)
    if m is None:
        raise AssertionError(
            f"the report did not load in Chromium (rc {proc.returncode}): {proc.stderr[-1500:]}"
        )
    result = json.loads(html.unescape(m.group(1)))
    if "error" in result:
        raise AssertionError(f"report category {category!r}: {result['error']}")
    return result["figures"]
