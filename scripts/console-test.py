#!/usr/bin/python3
"""Drive the web console in headless Chromium against a real server and agent.

Starts tidegate-server on 127.0.0.1 (free ports, a temporary --db, its embedded broker) with
--admin-token-file, and one tidegate-agent whose root is a small fixture root in a temporary
directory. Then it drives the loop a user sees, through the `tidegate` CLI with the admin token in
TIDEGATE_TOKEN: it assigns the agent an owner team, publishes a bundle signed by two security keys
(held for a rollout), publishes the tier's window schedule signed by the OT key (a nightly window
and a one-off window open now), starts a rollout and waits until the agent has applied the bundle
(etc/motd in the fixture root holds the payload) and the rollout is completed. Then it publishes
version 2 of the schedule with a freeze from now on, rolls out a second bundle, and waits until the
agent reports it waiting until the freeze's end. Then it signs in to the console with the token
and checks what a user would check:

- the agent's hostname is listed in the fleet table under its tier, with one bundle waiting, and
  under its owner team;
- the agent page's package count equals the API's, it lists a known package, also through the
  filter box, and its bundle history lists both bundles, newest first: the held one as "waiting
  until" the freeze's end with the freeze's reason, the applied one with its two steps applied;
- the agent page refreshes its data without reloading and keeps the filter text;
- the windows page shows the tier's calendar: 14 day columns, each with a window bar, the nightly
  window labelled 02:00-04:00 with its cutoff, and the freeze in today's column;
- the bundles page lists both rollouts with their bundle, state, wave and progress (1 of 1 applied,
  0 of 1 delivered), and both bundles with two signers each;
- the rollout page lists its one wave and the agent as applied;
- the audit page lists the bundle publication, the schedule publication, the rollout start and
  the agent's outcome, all dated this year, and fits the window's width;
- signing out returns to the sign-in form, and the browser logged no errors.

It saves a screenshot of each page (PNG) to the directory given as the first argument, and exits
with status 1 naming the first check that failed, after the last lines of the server's and the
agent's logs. The whole run, builds excluded, is limited to TOTAL_SECONDS; the server, the agent and
the browser are stopped whatever happens.

Needs Debian's chromium, chromium-driver and python3-selenium; it runs under /usr/bin/python3
because Debian installs selenium for that interpreter. Binaries come from `cargo build` unless
--no-build is given; CARGO_TARGET_DIR is honoured.

Usage: scripts/console-test.py SCREENSHOT_DIR [--no-build] [--keep]
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as conditions
from selenium.webdriver.support.ui import WebDriverWait

REPOSITORY = Path(__file__).resolve().parent.parent
TIER = "plant-floor"
OWNER = "plant-ops"
KNOWN_PACKAGE = "openssl"

# Installed packages of the fixture root, as (name, version). The apt lists offer a newer
# openssl from a security archive and a newer curl from the main archive.
FIXTURE_PACKAGES = [
    ("base-files", "12.4+deb12u5"),
    ("bash", "5.2.15-2+b2"),
    ("coreutils", "9.1-1"),
    ("curl", "7.88.1-10+deb12u4"),
    ("dpkg", "1.21.22"),
    ("libc6", "2.36-9+deb12u4"),
    ("libssl3", "3.0.11-1~deb12u2"),
    ("openssl", "3.0.11-1~deb12u2"),
    ("systemd", "252.22-1~deb12u1"),
    ("tzdata", "2024a-0+deb12u1"),
]
SECURITY_UPDATES = [("openssl", "3.0.13-1~deb12u1")]
MAIN_UPDATES = [("curl", "7.88.1-10+deb12u5")]

BUNDLE_ID = "console-motd"
MOTD_TEXT = "Managed by tidegate: changes to this host go through the change board.\n"
# Two steps the agent can apply below its fixture root: a file owned by root (which the fixture's
# etc/passwd and etc/group define) and one line in an existing configuration file.
BUNDLE_STEPS = json.dumps([
    {"WriteFile": {"path": "etc/motd", "payload": "motd", "mode": 0o644, "owner": "root", "group": "root"}},
    {"EnsureConfigLine": {"path": "etc/ssh/sshd_config", "match_prefix": "PermitRootLogin ",
                          "line": "PermitRootLogin no"}},
])
STEP_KINDS = ["write-file", "ensure-config-line"]
# A second bundle, rolled out during a freeze, which the agent keeps waiting.
HELD_BUNDLE_ID = "console-issue"
HELD_BUNDLE_STEPS = json.dumps([
    {"WriteFile": {"path": "etc/issue.net", "payload": "issue", "mode": 0o644, "owner": "root", "group": "root"}},
])
FREEZE_REASON = "plant audit"

WAIT_SECONDS = 30
# The whole run, builds excluded, must finish within this many seconds.
TOTAL_SECONDS = 300


class CheckFailed(Exception):
    """A check a user would make did not hold."""


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def log(message):
    print(f"console-test: {message}", flush=True)


def free_port(low=None, high=None):
    """Returns a free 127.0.0.1 port, from [low, high) when given."""
    for _ in range(200):
        port = random.randrange(low, high) if low else 0
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise RuntimeError(f"no free port found between {low} and {high}")


def write_fixture_root(root):
    dpkg = root / "var/lib/dpkg"
    dpkg.mkdir(parents=True)
    stanzas = [
        f"Package: {name}\nStatus: install ok installed\nPriority: optional\n"
        f"Architecture: amd64\nVersion: {version}\nDescription: fixture package {name}\n"
        for name, version in FIXTURE_PACKAGES
    ]
    (dpkg / "status").write_text("\n".join(stanzas))
    lists = root / "var/lib/apt/lists"
    lists.mkdir(parents=True)

    def packages_file(updates):
        return "\n".join(
            f"Package: {name}\nArchitecture: amd64\nVersion: {version}\n" for name, version in updates
        )

    (lists / "deb.debian.org_debian-security_dists_bookworm-security_main_binary-amd64_Packages").write_text(
        packages_file(SECURITY_UPDATES)
    )
    (lists / "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages").write_text(
        packages_file(MAIN_UPDATES)
    )
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text('NAME="Fixture Linux"\nVERSION_ID="1"\n')
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/ssh").mkdir()
    (root / "etc/ssh/sshd_config").write_text("Port 22\nPermitRootLogin yes\n")


def run_tidegate(tidegate, work, *arguments, token=None):
    """Runs the operator CLI in `work` and returns its output, failing the test on an error. The
    token, when given, reaches the CLI as TIDEGATE_TOKEN."""
    environment = {key: value for key, value in os.environ.items() if key != "TIDEGATE_TOKEN"}
    if token:
        environment["TIDEGATE_TOKEN"] = token
    try:
        result = subprocess.run([str(tidegate), *arguments], cwd=work, capture_output=True, text=True,
                                env=environment, timeout=60)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"tidegate {' '.join(arguments)} did not finish within 60 s") from None
    check(result.returncode == 0,
          f"tidegate {' '.join(arguments)} failed with status {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def stamp(unix_seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_seconds))


def write_trust_root_and_bundle(tidegate, work):
    """Makes a root key, two security keys, an OT key, a signed trust root and a bundle signed by both
    security keys, as security would at their own desks. Returns the root file and the bundle."""
    for key, role in (("root.key", "root"), ("sec1.key", "security"), ("sec2.key", "security"), ("ot.key", "ot")):
        run_tidegate(tidegate, work, "keys", "generate", "--role", role, "--out", key)
    run_tidegate(tidegate, work, "root", "new", "--out", "root.json")
    run_tidegate(tidegate, work, "root", "add-key", "root.json", "--key", "root.key", "--key", "sec1.key",
                 "--key", "sec2.key", "--key", "ot.key")
    run_tidegate(tidegate, work, "root", "set-threshold", "root.json", "--role", "root", "--count", "1")
    run_tidegate(tidegate, work, "root", "set-threshold", "root.json", "--role", "security", "--count", "2")
    run_tidegate(tidegate, work, "root", "set-threshold", "root.json", "--role", "ot", "--count", "1")
    run_tidegate(tidegate, work, "root", "sign", "root.json", "--key", "root.key")
    run_tidegate(tidegate, work, "root", "export", "root.json", "--out", "root.tgrt")

    (work / "steps.json").write_text(BUNDLE_STEPS)
    (work / "motd").write_text(MOTD_TEXT)
    now = time.time()
    run_tidegate(tidegate, work, "bundle", "new", "--out", "fix.tgbd", "--id", BUNDLE_ID, "--stream", "baseline",
                 "--sequence", "1", "--not-before", stamp(now - 3600), "--expires", stamp(now + 30 * 86400),
                 "--tier", TIER, "--steps", "steps.json", "--payload", "motd=motd")
    run_tidegate(tidegate, work, "bundle", "sign", "fix.tgbd", "--key", "sec1.key")
    run_tidegate(tidegate, work, "bundle", "sign", "fix.tgbd", "--key", "sec2.key")
    return work / "root.tgrt", work / "fix.tgbd"


def write_held_bundle(tidegate, work):
    """Writes the second bundle, the next in the stream, signed by both security keys."""
    (work / "held-steps.json").write_text(HELD_BUNDLE_STEPS)
    (work / "issue").write_text("Authorised use only.\n")
    now = time.time()
    run_tidegate(tidegate, work, "bundle", "new", "--out", "held.tgbd", "--id", HELD_BUNDLE_ID, "--stream",
                 "baseline", "--sequence", "2", "--not-before", stamp(now - 3600), "--expires",
                 stamp(now + 30 * 86400), "--tier", TIER, "--steps", "held-steps.json", "--payload", "issue=issue")
    run_tidegate(tidegate, work, "bundle", "sign", "held.tgbd", "--key", "sec1.key")
    run_tidegate(tidegate, work, "bundle", "sign", "held.tgbd", "--key", "sec2.key")
    return work / "held.tgbd"


def write_frozen_schedule(tidegate, work, schedule, freeze_end):
    """Writes version 2 of the tier's schedule: version 1 with a freeze from now to `freeze_end`."""
    run_tidegate(tidegate, work, "windows", "new", "--from", str(schedule), "--version", "2",
                 "--not-before", stamp(time.time() - 60), "--out", "schedule2.json")
    run_tidegate(tidegate, work, "windows", "freeze", "schedule2.json", "--start", stamp(time.time() - 60),
                 "--end", stamp(freeze_end), "--reason", FREEZE_REASON)
    run_tidegate(tidegate, work, "windows", "sign", "schedule2.json", "--key", "ot.key")
    run_tidegate(tidegate, work, "windows", "export", "schedule2.json", "--out", "schedule2.tgws")
    return work / "schedule2.tgws"


def write_schedule(tidegate, work):
    """Writes the tier's window schedule, signed by the OT key: a window every night from 02:00 to
    04:00 UTC with a 30-minute cutoff, and a one-off window open now, so the rollout's bundle can
    start at once. Returns the signed schedule file."""
    now = time.time()
    run_tidegate(tidegate, work, "windows", "new", "--tier", TIER, "--version", "1", "--zone", "UTC",
                 "--not-before", stamp(now - 3600), "--out", "schedule.json")
    run_tidegate(tidegate, work, "windows", "add", "schedule.json", "--cron", "0 2 * * *", "--duration", "2h",
                 "--cutoff", "30m")
    run_tidegate(tidegate, work, "windows", "add-once", "schedule.json", "--start", stamp(now - 600),
                 "--end", stamp(now + 3 * 3600))
    run_tidegate(tidegate, work, "windows", "sign", "schedule.json", "--key", "ot.key")
    run_tidegate(tidegate, work, "windows", "export", "schedule.json", "--out", "schedule.tgws")
    return work / "schedule.tgws"


def api_get(base, path, token):
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def wait_until(what, condition, timeout=WAIT_SECONDS):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except (OSError, urllib.error.URLError, ValueError) as error:
            last_error = error
        time.sleep(0.2)
    raise CheckFailed(f"timed out after {timeout} s waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


def target_dir():
    if os.environ.get("CARGO_TARGET_DIR"):
        return Path(os.environ["CARGO_TARGET_DIR"])
    metadata = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=REPOSITORY, check=True, capture_output=True, text=True,
    )
    return Path(json.loads(metadata.stdout)["target_directory"])


class Processes:
    """The server and agent processes, stopped in reverse order of start."""

    def __init__(self):
        self.running = []

    def start(self, name, command, log_path):
        log_file = open(log_path, "wb")
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                   env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")})
        self.running.append((name, process, log_file, log_path))
        return process

    def check_alive(self):
        for name, process, _, log_path in self.running:
            if process.poll() is not None:
                raise CheckFailed(f"{name} exited with status {process.returncode}; see {log_path}")

    def stop(self):
        for _, process, log_file, _ in reversed(self.running):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            log_file.close()


def start_browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    # Chromium's sandbox does not start as root, and CI runs as root.
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


class Console:
    """The browser on the console, with waits that name what they waited for."""

    def __init__(self, driver, base, screenshots):
        self.driver = driver
        self.base = base
        self.screenshots = screenshots

    def wait(self, what, condition, timeout=WAIT_SECONDS):
        try:
            # Pages redraw their data every few seconds, so an element found a moment ago may be
            # replaced before it is read; such a read is simply tried again.
            return WebDriverWait(self.driver, timeout,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(condition)
        except TimeoutException:
            raise CheckFailed(f"timed out after {timeout} s waiting for {what} on {self.driver.current_url}") from None

    def element(self, what, css):
        return self.wait(what, conditions.visibility_of_element_located((By.CSS_SELECTOR, css)))

    def open(self, fragment):
        self.driver.get(f"{self.base}/{fragment}")

    def rows(self, css):
        """Reads the rows matching `css` in one script call, so a refresh cannot detach them
        halfway: each row's attributes, the text of its cells, its progress bar's value and
        maximum, and the classes of its state badges."""
        return self.driver.execute_script("""
            return [...document.querySelectorAll(arguments[0])].map((row) => {
              const progress = row.querySelector("progress");
              return {
                attributes: Object.fromEntries([...row.attributes].map((a) => [a.name, a.value])),
                cells: [...row.children].map((cell) => cell.innerText.trim()),
                progress: progress ? [progress.getAttribute("value"), progress.getAttribute("max")] : null,
                states: [...row.querySelectorAll(".state")].map((badge) => badge.className),
              };
            });""", css)

    def screenshot(self, name):
        # Lets the page finish painting after the last refresh.
        time.sleep(0.3)
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1400, max(1000, min(height + 150, 6000)))
        path = self.screenshots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(1400, 1000)
        log(f"saved {path}")

    def browser_errors(self):
        """Returns the errors Chromium logged. Every endpoint the console calls exists on this
        server, so a 404 counts as an error too."""
        return [entry["message"] for entry in self.driver.get_log("browser") if entry["level"] == "SEVERE"]


def run_checks(console, base, token, agent_id, hostname, rollout_ids, freeze_end):
    rollout_id, held_rollout_id = rollout_ids
    driver = console.driver

    log("sign-in page")
    console.open("")
    token_input = console.element("the sign-in form", "#token")
    check(driver.find_element(By.CSS_SELECTOR, "label[for=token]").text == "API token",
          "the token field has no label")
    console.screenshot("01-sign-in")
    token_input.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#sign-in-form button[type=submit]").click()

    log("fleet page, grouped by tier")
    tier_css = f'section[data-group="{TIER}"][data-grouping="tier"]'
    console.element(f"the fleet group of tier {TIER}", tier_css)
    # The fleet page refreshes every 5 s, so the table is read in one script call.
    heading = driver.execute_script("return document.querySelector(arguments[0]).innerText", f"{tier_css} h2")
    check(heading.startswith(f"Tier: {TIER}"), f"the tier group's heading is {heading!r}")
    rows = console.rows(f'{tier_css} tr[data-agent-id="{agent_id}"]')
    check(len(rows) == 1, f"the tier group lists the agent {len(rows)} times, expected once")
    host, *cells = rows[0]["cells"]
    check(host == hostname, f"the fleet table lists {host!r}, expected {hostname!r}")
    check(cells[0] == OWNER, f"the owner column shows {cells[0]!r}, expected {OWNER!r}")
    check(cells[1].endswith("online"), f"the online column shows {cells[1]!r}")
    check(cells[2].endswith("2"), f"the pending updates column shows {cells[2]!r}, expected 2")
    check(cells[3].endswith("1"), f"the security updates column shows {cells[3]!r}, expected 1")
    check(cells[6].endswith("1 waiting"), f"the bundles column shows {cells[6]!r}, expected 1 waiting")
    states = rows[0]["states"]
    check(states[0] == "state pass", f"the online badge is {states[0]!r}, expected a pass")
    check(states[2] == "state fail", f"the security badge is {states[2]!r}, expected a fail")
    check(states[-1] == "state unknown", f"the waiting bundle's badge is {states[-1]!r}, expected unknown")
    headers = console.rows(f"{tier_css} thead tr")[0]["cells"]
    check(headers[0].lower() == "host", f"the fleet table's first column header is {headers[0]!r}")
    console.screenshot("02-fleet-by-tier")

    log("fleet page, grouped by owner team")
    driver.find_element(By.CSS_SELECTOR, 'input[name=grouping][value=owner]').click()
    section = console.element(f"the fleet group of owner {OWNER}", f'section[data-group="{OWNER}"][data-grouping="owner"]')
    check(section.find_elements(By.CSS_SELECTOR, f'tr[data-agent-id="{agent_id}"]'),
          f"the owner group {OWNER} does not list the agent")
    console.screenshot("03-fleet-by-owner")
    driver.find_element(By.CSS_SELECTOR, 'input[name=grouping][value=tier]').click()

    log("agent page")
    detail = api_get(base, f"/api/v1/agents/{agent_id}", token)
    console.element("the agent link", f'tr[data-agent-id="{agent_id}"] th a').click()
    count = console.wait("the package count", lambda d: d.find_element(By.ID, "package-count").get_attribute("data-total") or False)
    check(int(count) == len(detail["packages"]),
          f"the agent page counts {count} package rows, the API returns {len(detail['packages'])}")
    check(driver.find_element(By.CSS_SELECTOR, "#view h1").text == hostname, "the agent page's heading is not the hostname")
    names = [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "table.packages tbody th")]
    check(KNOWN_PACKAGE in names, f"the package table lacks {KNOWN_PACKAGE}: {names}")
    updates = [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "table.updates tbody th")]
    check(updates == ["curl", "openssl"], f"the pending updates table lists {updates}, expected curl and openssl")
    history = [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "table.bundle-history tbody th")]
    check(history == [HELD_BUNDLE_ID, BUNDLE_ID],
          f"the bundle history lists {history}, expected {HELD_BUNDLE_ID} then {BUNDLE_ID}, newest first")
    held, record = driver.find_elements(By.CSS_SELECTOR, "table.bundle-history tbody tr")
    badge = held.find_element(By.CSS_SELECTOR, ".outcome > .state")
    expected_badge = time.strftime("waiting until %Y-%m-%d %H:%M:%S UTC", time.gmtime(freeze_end))
    check(badge.text.endswith(expected_badge) and badge.get_attribute("class") == "state unknown",
          f"the held bundle's outcome shows {badge.text!r} ({badge.get_attribute('class')}), expected {expected_badge!r}")
    reason = held.find_element(By.CSS_SELECTOR, ".outcome > .outcome-detail").text
    check(reason.startswith("frozen: ") and FREEZE_REASON in reason,
          f"the held bundle's reason reads {reason!r}, expected the freeze's reason and the code 'frozen'")
    outcome = record.find_element(By.CSS_SELECTOR, ".outcome > .state")
    check(outcome.text.endswith("applied") and outcome.get_attribute("class") == "state pass",
          f"the bundle history shows the outcome {outcome.text!r} ({outcome.get_attribute('class')}), expected a pass 'applied'")
    steps = [item.text for item in record.find_elements(By.CSS_SELECTOR, "ol.steps li")]
    expected_steps = [f"{kind} applied" for kind in STEP_KINDS]
    # Each item reads "KIND", the badge's hidden state word ("pass:") and the outcome.
    check([f"{step.split()[0]} {step.split()[-1]}" if step.split() else "" for step in steps] == expected_steps,
          f"the bundle history lists the steps {steps}, expected {expected_steps}")
    console.screenshot("04-agent")
    driver.find_element(By.CSS_SELECTOR, "label[for=package-filter]")
    driver.find_element(By.ID, "package-filter").send_keys("openss")
    console.wait("the filtered package count",
                 lambda d: d.find_element(By.ID, "package-count").get_attribute("data-shown") == "1")
    names = [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "table.packages tbody th")]
    check(names == [KNOWN_PACKAGE], f"the filter 'openss' shows {names}, expected only {KNOWN_PACKAGE}")
    console.screenshot("05-agent-filtered")

    log("agent page refresh")
    received_xpath = "//dt[.='Reports received']/following-sibling::dd[1]"
    received = console.wait("the report counter", lambda d: d.find_element(By.XPATH, received_xpath).text)
    driver.execute_script("window.consoleTestMarker = 'not reloaded'")
    console.wait("the agent page to refresh its report counter",
                 lambda d: d.find_element(By.XPATH, received_xpath).text != received)
    marker = driver.execute_script("return window.consoleTestMarker")
    check(marker == "not reloaded", "the agent page reloaded to refresh its data")
    check(driver.find_element(By.ID, "package-filter").get_attribute("value") == "openss",
          "the package filter lost its text when the page refreshed")
    check(driver.find_element(By.ID, "package-count").get_attribute("data-shown") == "1",
          "the package filter no longer applies after the page refreshed")

    log("windows page")
    console.open("#/windows")
    section = console.element(f"the windows of tier {TIER}", "section.tier-windows")
    heading = section.find_element(By.TAG_NAME, "h2").text
    check(heading == f"Tier: {TIER}", f"the windows section's heading is {heading!r}, expected 'Tier: {TIER}'")
    days = section.find_elements(By.CSS_SELECTOR, ".calendar .day")
    check(len(days) == 14, f"the calendar has {len(days)} day columns, expected 14")
    check(all(day.find_element(By.CSS_SELECTOR, ".day-head").text for day in days), "a day column has no date")
    # The nightly window of 02:00 to 04:00 UTC falls on each of the 13 days after today, and today
    # has the one-off window open now (the nightly one too when the test runs before 04:00).
    bars = section.find_elements(By.CSS_SELECTOR, ".bar.window:not(.cutoff)")
    check(len(bars) >= 14, f"the calendar shows {len(bars)} window bars, expected at least 14")
    days_with_bars = sum(1 for day in days if day.find_elements(By.CSS_SELECTOR, ".bar.window"))
    check(days_with_bars == 14, f"{days_with_bars} of the 14 day columns show a window, expected all")
    freezes = [bar.get_attribute("aria-label") for bar in days[0].find_elements(By.CSS_SELECTOR, ".bar.freeze")]
    check(freezes and FREEZE_REASON in freezes[0], f"today's column shows the freezes {freezes}, expected {FREEZE_REASON!r}")
    # The last day is past the one-off window, so its only window is the nightly one.
    labels = [bar.get_attribute("aria-label") for bar in days[-1].find_elements(By.CSS_SELECTOR, ".bar.window")]
    check(labels and all("02:00–04:00 UTC; no new bundle starts after" in label and "03:30" in label for label in labels),
          f"the last day's window bars are labelled {labels}, expected 02:00–04:00 with a cutoff at 03:30")
    console.screenshot("06-windows")

    log("bundles and rollouts page")
    console.open("#/bundles")
    console.element(f"the row of rollout {rollout_id}", f'table.rollouts tr[data-rollout-id="{rollout_id}"]')
    console.element("the published bundles table", "table.bundles tbody tr")
    # This page refreshes every 2 s, so each table is read in one script call, never cell by cell.
    rollouts = {row["attributes"].get("data-rollout-id"): row for row in console.rows("table.rollouts tbody tr")}
    row = rollouts.get(str(rollout_id))
    check(row, f"the rollouts table has no row for rollout {rollout_id}: {list(rollouts)}")
    header, bundle_cell, state, wave, progress = row["cells"][:5]
    check(header == f"#{rollout_id}", f"the rollout's row header is {header!r}, expected #{rollout_id}")
    check(bundle_cell.startswith(BUNDLE_ID), f"the rollout's bundle cell shows {bundle_cell!r}, expected {BUNDLE_ID}")
    check(state.endswith("completed"), f"the rollout's state shows {state!r}, expected completed")
    check(wave == "1 of 1", f"the rollout's wave shows {wave!r}, expected '1 of 1'")
    check(row["progress"] == ["1", "1"], f"the rollout's progress bar is at {row['progress']}, expected 1 of 1")
    check(progress.strip() == "1 of 1 finished: 1 applied", f"the rollout's progress reads {progress!r}")
    held = rollouts.get(str(held_rollout_id))
    check(held, f"the rollouts table has no row for rollout {held_rollout_id}: {list(rollouts)}")
    _, bundle_cell, state, _, progress = held["cells"][:5]
    check(bundle_cell.startswith(HELD_BUNDLE_ID) and state.endswith("running"),
          f"the second rollout's row shows {bundle_cell!r} {state!r}, expected {HELD_BUNDLE_ID} running")
    check(progress.strip() == "0 of 1 finished: 1 delivered", f"the second rollout's progress reads {progress!r}")
    check(held["progress"] == ["0", "1"], f"the second rollout's progress bar is at {held['progress']}, expected 0 of 1")

    published = console.rows("table.bundles tbody tr")
    names = [row["cells"][0] for row in published]
    check(names == [HELD_BUNDLE_ID, BUNDLE_ID], f"the bundles table lists {names}, expected the newest first")
    for row in published:
        signers = row["cells"][4].split(", ")
        check(len(signers) == 2, f"the bundles table names the signers {signers} for {row['cells'][0]}, expected two")
    console.screenshot("07-bundles")

    log("rollout page")
    console.element(f"the link to rollout {rollout_id}", f'table.rollouts tr[data-rollout-id="{rollout_id}"] th a').click()
    console.element("the rollout's agent row", f'table.rollout-agents tr[data-agent-id="{agent_id}"]')
    agents = console.rows("table.rollout-agents tbody tr")
    check(len(agents) == 1, f"the rollout page lists {len(agents)} agents, expected 1")
    check(agents[0]["cells"][3].endswith("applied"),
          f"the rollout page shows the agent's state {agents[0]['cells'][3]!r}, expected applied")
    waves = console.rows("table.waves tbody tr")
    check([wave["cells"][:2] for wave in waves] == [["1", "1"]],
          f"the rollout page lists the waves {[wave['cells'] for wave in waves]}, expected one wave of 1 agent")
    console.screenshot("08-rollout")

    log("audit log page")
    console.open("#/audit")
    console.element("the audit table", "table.audit tbody tr")
    entries = [[cell.text for cell in row.find_elements(By.CSS_SELECTOR, "th, td")]
               for row in driver.find_elements(By.CSS_SELECTOR, "table.audit tbody tr")]
    actions = [(entry[3], entry[4]) for entry in entries]
    for expected in (("bundle.published", BUNDLE_ID), ("api.request", "/api/v1/schedules"),
                     ("api.request", "/api/v1/rollouts"), ("agent.bundle.applied", BUNDLE_ID)):
        check(expected in actions, f"the audit page lacks the entry {expected}; it lists {actions}")
    applied = next(entry for entry in entries if entry[3] == "agent.bundle.applied")
    check(applied[2] == f"agent:{agent_id}", f"the applied entry's actor is {applied[2]!r}, expected agent:{agent_id}")
    years = {entry[1][:4] for entry in entries}
    check(years == {time.strftime("%Y", time.gmtime())}, f"the audit entries are dated in the years {sorted(years)}")
    check(driver.find_element(By.CSS_SELECTOR, "label[for=audit-limit]"), "the page size has no label")
    width = driver.execute_script("return document.documentElement.scrollWidth")
    check(width <= 1400, f"the audit page is {width} px wide, wider than the 1400 px window")
    console.screenshot("09-audit")

    log("sign out")
    driver.find_element(By.ID, "sign-out").click()
    message = console.element("the sign-in message", "#sign-in-message")
    check(message.text == "You signed out.", f"the sign-in message is {message.text!r}")
    stored = driver.execute_script("return sessionStorage.getItem('tidegate.api-token')")
    check(stored is None, "the token is still in sessionStorage after signing out")

    errors = console.browser_errors()
    check(not errors, f"the browser logged errors: {errors}")


class TotalTimeout(CheckFailed):
    """The whole run took longer than TOTAL_SECONDS."""


def on_total_timeout(signal_number, frame):
    raise TotalTimeout(f"the test did not finish within {TOTAL_SECONDS} s")


def wait_for_admin_token(path, processes):
    """Returns the admin token the server wrote to `path` on its first start."""
    def token():
        processes.check_alive()
        return path.exists() and path.read_text().strip().splitlines()[0].strip()

    return wait_until(f"the server to write the admin token to {path}", token)


def prepare_fleet(binaries, work, processes, base, mqtt_port):
    """Starts the server and the agent and drives the CLI through what a user does before opening
    the console: owner team, bundle publication, window schedule, rollout, and a second bundle that
    a freeze holds. Returns the token, the agent's summary, the ids of both rollouts and the end of
    the freeze."""
    root = work / "root"
    write_fixture_root(root)
    tidegate = binaries / "tidegate"
    trust_root, bundle = write_trust_root_and_bundle(tidegate, work)
    schedule = write_schedule(tidegate, work)

    token_file = work / "admin.token"
    processes.start("tidegate-server", [
        str(binaries / "tidegate-server"), "--db", str(work / "tidegate.db"),
        "--http-listen", base.removeprefix("http://"), "--mqtt-listen", f"127.0.0.1:{mqtt_port}",
        "--trust-root", str(trust_root), "--admin-token-file", str(token_file),
    ], work / "server.log")
    wait_until("the server's HTTP API", lambda: (processes.check_alive(), urllib.request.urlopen(
        f"{base}/healthz", timeout=2).read() == b"ok")[1])
    token = wait_for_admin_token(token_file, processes)

    # This machine's kernel may report its clock as unsynchronised, and the schedule reaches the
    # agent only once the rollout starts, so neither may hold the bundle back.
    (work / "agent.toml").write_text(
        f'root_dir = "{root}"\nstate_dir = "{work / "agent"}"\ntier = "{TIER}"\n'
        f'trust_root_file = "{trust_root}"\n\n'
        f'[mqtt]\nbroker_url = "mqtt://127.0.0.1:{mqtt_port}"\n\n'
        f'[reports]\ninterval_seconds = 2\n\n'
        f'[windows]\nrequire_schedule = false\n\n'
        f'[clock]\nrequire_os_synchronised = false\n')
    processes.start("tidegate-agent", [str(binaries / "tidegate-agent"), "run", "--config", str(work / "agent.toml")],
                    work / "agent.log")

    def reported_agent():
        processes.check_alive()
        agents = api_get(base, "/api/v1/agents", token)["agents"]
        return next((agent for agent in agents if agent.get("last_report_unix_s")), None)

    agent = wait_until("the agent's first report", reported_agent)
    agent_id = agent["agent_id"]
    log(f"agent {agent_id} ({agent['hostname']}) reported {agent['package_count']} packages")

    cli = lambda *arguments: run_tidegate(tidegate, work, "--server", base, *arguments, token=token)
    cli("fleet", "assign", agent_id, "--owner", OWNER)
    cli("bundle", "publish", "--publisher", "console-test", str(bundle))
    cli("windows", "publish", "--publisher", "console-test", str(schedule))
    started = json.loads(cli("rollout", "start", BUNDLE_ID, "--canary", "0", "--requested-by", "console-test",
                             "--json"))
    rollout_id = started.get("id")
    check(rollout_id is not None, f"tidegate rollout start --json returned no rollout id: {started}")
    log(f"started rollout {rollout_id} of {BUNDLE_ID}")

    def bundle_applied():
        processes.check_alive()
        detail = api_get(base, f"/api/v1/agents/{agent_id}", token)
        records = [record for record in detail["bundles"] if record["bundle_id"] == BUNDLE_ID]
        if records and records[-1]["outcome"] not in ("Accepted", "Running") and not (
                isinstance(records[-1]["outcome"], dict) and set(records[-1]["outcome"]) <= {"Running", "Waiting"}):
            check(records[-1]["outcome"] == "Applied",
                  f"the agent reported {records[-1]['outcome']} for {BUNDLE_ID}, expected Applied")
            return True
        return False

    wait_until(f"the agent to apply bundle {BUNDLE_ID}", bundle_applied)
    motd = root / "etc/motd"
    check(motd.is_file() and motd.read_text() == MOTD_TEXT, f"{motd} does not contain the bundle's payload")
    wait_until(f"rollout {rollout_id} to complete", lambda: api_get(
        base, f"/api/v1/rollouts/{rollout_id}", token)["status"]["state"] == "completed")

    # A freeze that starts now holds the next bundle in the agent's queue until it ends.
    freeze_end = int(time.time()) + 3600
    cli("windows", "publish", "--publisher", "console-test",
        str(write_frozen_schedule(tidegate, work, schedule, freeze_end)))
    cli("bundle", "publish", "--publisher", "console-test", str(write_held_bundle(tidegate, work)))
    held_rollout_id = json.loads(cli("rollout", "start", HELD_BUNDLE_ID, "--canary", "0", "--requested-by",
                                     "console-test", "--json")).get("id")
    check(held_rollout_id is not None, f"tidegate rollout start --json returned no rollout id for {HELD_BUNDLE_ID}")

    def bundle_waiting():
        processes.check_alive()
        detail = api_get(base, f"/api/v1/agents/{agent_id}", token)
        records = [record for record in detail["bundles"] if record["bundle_id"] == HELD_BUNDLE_ID]
        outcome = records[-1]["outcome"] if records else None
        check(outcome in (None, "Accepted") or (isinstance(outcome, dict) and "Waiting" in outcome),
              f"the agent reported {outcome} for {HELD_BUNDLE_ID}, expected it to wait for the freeze's end")
        return outcome if isinstance(outcome, dict) else None

    waiting = wait_until(f"the agent to hold bundle {HELD_BUNDLE_ID}", bundle_waiting)["Waiting"]
    log(f"the agent holds {HELD_BUNDLE_ID}: {waiting}")
    check(waiting["expected_start_unix_s"] == freeze_end,
          f"the agent expects to start {HELD_BUNDLE_ID} at {waiting['expected_start_unix_s']}, expected the freeze's end {freeze_end}")
    return token, agent, (rollout_id, held_rollout_id), freeze_end


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("screenshots", type=Path, help="directory for the PNG screenshots, created when missing")
    parser.add_argument("--no-build", action="store_true", help="use the binaries already built")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory with logs")
    args = parser.parse_args()

    if not args.no_build:
        log("building tidegate-server, tidegate and tidegate-agent")
        subprocess.run(["cargo", "build", "--quiet", "-p", "tidegate-server", "-p", "tidegate-agent"],
                       cwd=REPOSITORY, check=True)
    binaries = target_dir() / "debug"
    for name in ("tidegate-server", "tidegate-agent", "tidegate"):
        if not (binaries / name).is_file():
            log(f"error: {binaries / name} is missing; build it with cargo build, or drop --no-build")
            return 1
    args.screenshots.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tidegate-console-test."))
    processes = Processes()
    driver = None
    signal.signal(signal.SIGALRM, on_total_timeout)
    signal.alarm(TOTAL_SECONDS)
    try:
        http_port = free_port()
        mqtt_port = free_port(20000, 32000)
        base = f"http://127.0.0.1:{http_port}"
        token, agent, rollout_ids, freeze_end = prepare_fleet(binaries, work, processes, base, mqtt_port)

        log("starting Chromium")
        driver = start_browser()
        run_checks(Console(driver, base, args.screenshots), base, token, agent["agent_id"], agent["hostname"],
                   rollout_ids, freeze_end)
        log(f"all checks passed; screenshots are in {args.screenshots}")
        return 0
    except (CheckFailed, WebDriverException) as failure:
        signal.alarm(0)
        if isinstance(failure, WebDriverException):
            log(f"FAILED: the browser reported {type(failure).__name__}: {failure.msg}")
        else:
            log(f"FAILED: {failure}")
        if driver:
            try:
                driver.save_screenshot(str(args.screenshots / "failure.png"))
                log(f"saved {args.screenshots / 'failure.png'}")
            except Exception as error:  # The browser may be the part that failed.
                log(f"could not save a failure screenshot: {error}")
        for name in ("server.log", "agent.log"):
            path = work / name
            if path.exists():
                log(f"last lines of {name}:")
                print("\n".join(path.read_text(errors="replace").splitlines()[-15:]), flush=True)
        return 1
    finally:
        signal.alarm(0)
        if driver:
            try:
                driver.quit()
            except Exception as error:  # A browser that hung or died must not keep the processes running.
                log(f"could not stop Chromium: {error}")
        processes.stop()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
