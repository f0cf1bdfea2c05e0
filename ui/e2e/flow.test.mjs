// Browser test of the Integration tab: Debian's Chromium, driven by
// playwright-core, against a page and a server that are already running.
//
//   UI_URL=http://127.0.0.1:4173/ GRPC_URL=http://127.0.0.1:50051 ADMIN_TOKEN=... \
//     node --test e2e/
//
// It clicks through the whole flow and writes a screenshot after each step
// to ui/artifacts/NN-step.png. `.ci/ui.sh` starts both servers and runs it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const UI_URL = required("UI_URL");
const GRPC_URL = required("GRPC_URL");
const ADMIN_TOKEN = required("ADMIN_TOKEN");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const ARTIFACTS = fileURLToPath(new URL("../artifacts/", import.meta.url));
const SECRET_FORMAT = /^cas_[A-Za-z0-9_]{60}$/;
const STATUS_TEXT = /^[A-Z_]+: \S/;

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} must be set (see the comment at the top of this file)`);
  return value;
}

test("the Integration tab, end to end", { timeout: 120_000 }, async (t) => {
  mkdirSync(ARTIFACTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
  t.after(() => browser.close());

  const context = await browser.newContext({ viewport: { width: 1100, height: 660 } });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: new URL(UI_URL).origin });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);

  const pageErrors = [];
  page.on("pageerror", (err) => pageErrors.push(String(err)));
  page.on("console", (msg) => msg.type() === "error" && pageErrors.push(msg.text()));
  const requestUrls = [];
  page.on("request", (req) => requestUrls.push(req.url()));

  const organizationId = `e2e-${randomBytes(6).toString("hex")}`;
  const $ = (selector) => page.locator(selector);
  const secretRow = (id) => $(`#history-rows tr[data-secret-id="${id}"]`);
  const hintShown = () => $("#secret-hint-value").textContent();

  // Steps run in order; after a failure the rest are skipped, and every
  // step, passed or failed, leaves its screenshot.
  let number = 0;
  let failed = false;
  const step = async (name, fn) => {
    number += 1;
    const id = String(number).padStart(2, "0");
    await t.test(`${id} ${name}`, { skip: failed && "an earlier step failed" }, async () => {
      try {
        await fn();
      } catch (err) {
        failed = true;
        throw err;
      } finally {
        const file = `${id}-${name.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "")}.png`;
        await page.screenshot({ path: ARTIFACTS + file, fullPage: true });
      }
    });
  };

  /** None of `values` is in the DOM, web storage, cookies or any URL the page used. */
  const assertNowhere = async (values) => {
    const html = await page.content();
    const stored = await page.evaluate(() => {
      const dump = (s) => Array.from({ length: s.length }, (_, i) => `${s.key(i)}=${s.getItem(s.key(i))}`);
      return { local: dump(localStorage), session: dump(sessionStorage), cookie: document.cookie };
    });
    const cookies = JSON.stringify(await context.cookies());
    for (const value of values) {
      assert.ok(!html.includes(value), "a secret value or token is in the page's DOM");
      assert.ok(!JSON.stringify(stored).includes(value), "a secret value or token is in web storage");
      assert.ok(!cookies.includes(value), "a secret value or token is in a cookie");
      assert.ok(!page.url().includes(value), "a secret value or token is in the page's URL");
      assert.ok(!requestUrls.some((u) => u.includes(value)), "a secret value or token is in a request URL");
    }
    assert.deepEqual(stored, { local: [], session: [], cookie: "" }, "the page wrote to web storage or cookies");
  };

  /** The values that the page's JavaScript heap still reaches, after a garbage collection. */
  const inHeap = async (values) => {
    const cdp = await context.newCDPSession(page);
    const chunks = [];
    cdp.on("HeapProfiler.addHeapSnapshotChunk", ({ chunk }) => chunks.push(chunk));
    await cdp.send("HeapProfiler.enable");
    await cdp.send("HeapProfiler.collectGarbage");
    await cdp.send("HeapProfiler.takeHeapSnapshot", { reportProgress: false });
    await cdp.detach();
    const snapshot = chunks.join("");
    return values.filter((v) => snapshot.includes(v));
  };

  const activateByTyping = async (value) => {
    await $("#open-activate").click();
    await $("#activate-dialog").waitFor({ state: "visible" });
    assert.equal(await $("#activate-value").getAttribute("type"), "password");
    await $("#activate-value").fill(value);
    await $("#activate-submit").click();
  };

  const first = { value: "", id: "" };
  const second = { value: "", id: "" };

  await step("connection filled", async () => {
    await page.goto(UI_URL);
    await $("#service-url").fill(GRPC_URL);
    await $("#admin-token").fill(ADMIN_TOKEN);
    await $("#organization-id").fill(organizationId);
    assert.equal(await $("#admin-token").getAttribute("type"), "password");
  });

  await step("wrong token refused", async () => {
    await $("#admin-token").fill("f".repeat(64));
    await $("#load").click();
    await assertAlert($("#alert"), /^UNAUTHENTICATED: /);
    await $("#admin-token").fill(ADMIN_TOKEN);
  });

  await step("no integration yet", async () => {
    await $("#load").click();
    await $("#no-integration").waitFor({ state: "visible" });
    assert.ok(await $("#alert").isHidden());
  });

  await step("integration created", async () => {
    await $("#create").click();
    await $("#integration").waitFor({ state: "visible" });
    const clientId = await $("#client-id").textContent();
    assert.match(clientId, /^[A-Za-z0-9_-]{8,64}$/);
    assert.equal(await $("#domain").textContent(), "centralauth.com");
    assert.equal(await $("#domain-kind").textContent(), "default");
    assert.ok(await $("#custom-domain").isHidden());
    assert.match(await $("#secret-hint").textContent(), /No active secret/);
    assert.equal(await $("#history-rows tr").count(), 0);

    await $("#copy-client-id").click();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), clientId);
  });

  await step("custom domain set", async () => {
    await $("#custom-domain-input").fill("Login.E2E.Example");
    await $("#save-domain").click();
    await $("#custom-domain").waitFor({ state: "visible" });
    assert.equal(await $("#custom-domain-name").textContent(), "login.e2e.example");
    assert.equal(await $("#custom-domain-state").textContent(), "unverified");
    assert.equal(await $("#txt-name").textContent(), "_centralauth.login.e2e.example");
    assert.match(await $("#txt-value").textContent(), /^\S{16,}$/);
    // Not the login domain until verified.
    assert.equal(await $("#domain").textContent(), "centralauth.com");
    assert.equal(await $("#domain-kind").textContent(), "default");
  });

  await step("domain not verified", async () => {
    // The server's resolver (see .ci/ui.sh) has no record for it.
    await $("#verify-domain").click();
    await assertAlert($("#alert"), /^(FAILED_PRECONDITION|UNAVAILABLE): /, 20_000);
    assert.equal(await $("#custom-domain-state").textContent(), "unverified");
  });

  await step("secret shown once", async () => {
    await $("#generate").click();
    await $("#new-secret-dialog").waitFor({ state: "visible" });
    first.value = (await $("#new-secret-value").textContent()) ?? "";
    assert.match(first.value, SECRET_FORMAT);
    // The tab behind the dialog already lists it as pending.
    const pending = $('#history-rows tr[data-state="PENDING"]');
    await pending.waitFor();
    first.id = (await pending.getAttribute("data-secret-id")) ?? "";
    assert.equal(await pending.locator("code").textContent(), first.value.slice(-4));

    await $("#copy-new-secret").click();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), first.value);
    // While the dialog is open the page holds it (and the heap check can see it).
    assert.deepEqual(await inHeap([first.value]), [first.value]);
  });

  await step("activate later", async () => {
    await page.evaluate(() => navigator.clipboard.writeText(""));
    await $("#activate-later").click();
    await $("#new-secret-dialog").waitFor({ state: "hidden" });
    assert.equal(await $("#new-secret-value").textContent(), "");
    await assertNowhere([first.value, ADMIN_TOKEN]);
    assert.deepEqual(await inHeap([first.value]), [], "the page's JavaScript still holds the value");
    assert.match(await $("#secret-hint").textContent(), /No active secret/);
    assert.match(await $("#pending-note").textContent(), new RegExp(`ending in ${first.value.slice(-4)}`));
  });

  await step("activated by typing the value", async () => {
    await activateByTyping(first.value);
    await $("#activate-dialog").waitFor({ state: "hidden" });
    await $("#secret-hint-value").waitFor();
    assert.equal(await hintShown(), first.value.slice(-4));
    assert.equal(await secretRow(first.id).getAttribute("data-state"), "ACTIVE");
    assert.ok(await $("#pending-note").isHidden());
    assert.equal(await $("#activate-value").inputValue(), "");
    await assertNowhere([first.value, ADMIN_TOKEN]);
  });

  await step("second secret shown once", async () => {
    await $("#generate").click();
    await $("#new-secret-dialog").waitFor({ state: "visible" });
    second.value = (await $("#new-secret-value").textContent()) ?? "";
    assert.match(second.value, SECRET_FORMAT);
    assert.notEqual(second.value, first.value);
    const pending = $('#history-rows tr[data-state="PENDING"]');
    await pending.waitFor();
    second.id = (await pending.getAttribute("data-secret-id")) ?? "";
  });

  await step("activate now", async () => {
    await $("#activate-now").click();
    await $("#new-secret-dialog").waitFor({ state: "hidden" });
    await page.waitForFunction(
      (hint) => document.getElementById("secret-hint-value")?.textContent === hint,
      second.value.slice(-4),
    );
    assert.equal(await secretRow(second.id).getAttribute("data-state"), "ACTIVE");
    assert.equal(await secretRow(first.id).getAttribute("data-state"), "REVOKED");
    // Newest first.
    const ids = await $("#history-rows tr").evaluateAll((rows) => rows.map((r) => r.dataset.secretId));
    assert.deepEqual(ids, [second.id, first.id]);
    assert.equal(await secretRow(first.id).locator("button").count(), 0, "a revoked secret offers no Revoke");
    await assertNowhere([first.value, second.value, ADMIN_TOKEN]);
  });

  await step("revoke asks first", async () => {
    await secretRow(second.id).getByRole("button", { name: "Revoke" }).click();
    await $("#confirm-dialog").waitFor({ state: "visible" });
    assert.match(await $("#confirm-text").textContent(), new RegExp(second.value.slice(-4)));
  });

  await step("active secret revoked", async () => {
    await $("#confirm-yes").click();
    await $("#confirm-dialog").waitFor({ state: "hidden" });
    await page.waitForFunction(
      (id) => document.querySelector(`#history-rows tr[data-secret-id="${id}"]`)?.dataset.state === "REVOKED",
      second.id,
    );
    assert.match(await $("#secret-hint").textContent(), /No active secret/);
    assert.equal(await $('#history-rows tr[data-state="ACTIVE"]').count(), 0);
  });

  await step("wrong value refused", async () => {
    // A value that was revoked matches neither the active nor the pending secret.
    await activateByTyping(first.value);
    await assertAlert($("#activate-dialog .dialog-alert"), /^FAILED_PRECONDITION: /);
    // A made-up value.
    await $("#activate-value").fill("not-a-secret");
    await $("#activate-submit").click();
    await assertAlert($("#activate-dialog .dialog-alert"), STATUS_TEXT);
    assert.ok(await $("#activate-dialog").isVisible(), "the dialog stays open to correct the value");
  });

  await step("nothing left behind", async () => {
    await $("#activate-cancel").click();
    await $("#activate-dialog").waitFor({ state: "hidden" });
    assert.equal(await $("#activate-value").inputValue(), "");
    assert.match(await $("#secret-hint").textContent(), /No active secret/);
    await assertNowhere([first.value, second.value, ADMIN_TOKEN]);
    assert.deepEqual(await inHeap([first.value, second.value]), [], "the page's JavaScript still holds a value");
    assert.deepEqual(pageErrors, [], "the page logged errors (a Content-Security-Policy violation?)");
  });
});

/** Waits for `area` to show a gRPC status name and message matching `pattern`. */
async function assertAlert(area, pattern, timeout = undefined) {
  await area.waitFor({ state: "visible", timeout });
  const text = (await area.textContent()) ?? "";
  assert.match(text, pattern);
  assert.match(text, STATUS_TEXT);
}
