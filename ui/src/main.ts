// The Integration tab: plain DOM code over the generated client.
//
// What this page holds, and where: the admin token only in its input field
// and in the client's closure (src/client.ts); a newly generated secret only
// while its dialog is open. Nothing is written to localStorage,
// sessionStorage, cookies or the URL.
import { Code } from "@connectrpc/connect";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import {
  DomainState,
  SecretState,
  type Integration,
  type Secret,
} from "./gen/centralauth/integration/v1/integration_pb";
import { connect, describeError, type IntegrationClient } from "./client";
import "./style.css";

const HISTORY_PAGE_SIZE = 10;

function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`#${id} is missing`);
  return el as T;
}

// --- connection -----------------------------------------------------------

let client: IntegrationClient | null = null;
let organizationId = "";
let historyPageToken = "";

const serviceUrl = $<HTMLInputElement>("service-url");
const adminToken = $<HTMLInputElement>("admin-token");
const organization = $<HTMLInputElement>("organization-id");
serviceUrl.value = import.meta.env.VITE_SERVICE_URL ?? "http://127.0.0.1:50051";

$<HTMLFormElement>("connection").addEventListener("submit", (ev) => {
  ev.preventDefault();
  client = connect(serviceUrl.value.trim(), adminToken.value.trim());
  organizationId = organization.value.trim();
  void busy($("load"), load);
});

function api(): IntegrationClient {
  if (client === null) throw new Error("not connected");
  return client;
}

// --- messages ---------------------------------------------------------------

/** Shows a failed call as its gRPC status name and message, in `area`. */
function showError(err: unknown, area: HTMLElement = $("alert")): void {
  area.textContent = describeError(err).text;
  area.hidden = false;
}

function clearMessages(): void {
  for (const el of document.querySelectorAll<HTMLElement>(".alert, .status")) {
    el.textContent = "";
    el.hidden = true;
  }
}

function showStatus(text: string): void {
  const el = $("status");
  el.textContent = text;
  el.hidden = false;
}

/** Runs `fn` with `button` disabled; failures go to `errorArea`. */
async function busy(button: HTMLElement, fn: () => Promise<void>, errorArea?: HTMLElement): Promise<void> {
  clearMessages();
  button.toggleAttribute("disabled", true);
  document.body.classList.add("busy");
  try {
    await fn();
  } catch (err) {
    showError(err, errorArea);
  } finally {
    button.toggleAttribute("disabled", false);
    document.body.classList.remove("busy");
  }
}

// --- loading and rendering -------------------------------------------------

async function load(): Promise<void> {
  try {
    const { integration } = await api().getIntegration({ organizationId });
    await show(integration);
  } catch (err) {
    if (describeError(err).code === Code.NotFound) {
      showNoIntegration();
      return;
    }
    hideAll();
    throw err;
  }
}

function hideAll(): void {
  $("no-integration").hidden = true;
  $("integration").hidden = true;
  $("history").hidden = true;
}

function showNoIntegration(): void {
  hideAll();
  $("no-integration").hidden = false;
}

/** Renders an integration answered by any call, then reloads the history. */
async function show(integration: Integration | undefined): Promise<void> {
  if (integration === undefined) {
    showNoIntegration();
    return;
  }
  $("no-integration").hidden = true;
  $("integration").hidden = false;

  $("domain").textContent = integration.domain;
  const kind = $("domain-kind");
  kind.textContent = integration.customDomain ? "custom" : "default";
  kind.dataset.kind = integration.customDomain ? "custom" : "default";

  const custom = integration.customDomainStatus;
  $("custom-domain").hidden = custom === undefined;
  if (custom !== undefined) {
    $("custom-domain-name").textContent = custom.name;
    const verified = custom.state === DomainState.VERIFIED;
    const state = $("custom-domain-state");
    state.textContent = verified ? "verified" : "unverified";
    state.dataset.state = verified ? "verified" : "unverified";
    $("custom-domain-todo").hidden = verified;
    $("txt-name").textContent = `_centralauth.${custom.name}`;
    $("txt-value").textContent = custom.verificationCode;
  }

  $("client-id").textContent = integration.clientId;

  const hint = $("secret-hint");
  hint.replaceChildren();
  if (integration.activeSecret !== undefined) {
    hint.append("Ends in ", el("code", { id: "secret-hint-value" }, integration.activeSecret.hint));
  } else {
    hint.append(el("span", { class: "muted" }, "No active secret: applications cannot authenticate."));
  }

  const pending = integration.pendingSecret;
  const note = $("pending-note");
  note.hidden = pending === undefined;
  if (pending !== undefined) {
    note.replaceChildren(
      "A new secret ending in ",
      el("code", {}, pending.hint),
      ` is waiting for activation${pending.expireTime ? ` until ${when(pending.expireTime)}` : ""}.`,
    );
  }

  await loadHistory(true);
}

async function loadHistory(reset: boolean): Promise<void> {
  if (reset) historyPageToken = "";
  const page = await api().listSecrets({
    organizationId,
    pageSize: HISTORY_PAGE_SIZE,
    pageToken: historyPageToken,
  });
  const rows = $("history-rows");
  if (reset) rows.replaceChildren();
  for (const secret of page.secrets) rows.append(historyRow(secret));
  historyPageToken = page.nextPageToken;
  $("more").hidden = historyPageToken === "";
  $("history").hidden = false;
}

$("more").addEventListener("click", () => void busy($("more"), () => loadHistory(false)));

function historyRow(secret: Secret): HTMLTableRowElement {
  const state = stateName(secret.state);
  const row = el("tr", { "data-secret-id": secret.id, "data-state": state });
  const lastUse = [when(secret.lastUseTime)];
  if (secret.lastRetiredUseTime !== undefined) {
    lastUse.push(`presented after retirement: ${when(secret.lastRetiredUseTime)}`);
  }
  row.append(
    el("td", {}, el("span", { class: "badge state", "data-state": state }, state)),
    el("td", {}, el("code", {}, secret.hint)),
    el("td", {}, when(secret.createTime)),
    el("td", {}, when(secret.activateTime)),
    el("td", {}, when(secret.revokeTime)),
    el("td", {}, lastUse.filter((s) => s !== "").join("; ")),
    el("td", {}, when(secret.expireTime)),
  );
  const actions = el("td");
  if (secret.state === SecretState.ACTIVE || secret.state === SecretState.PENDING) {
    const revoke = el("button", { type: "button", class: "small danger" }, "Revoke");
    revoke.addEventListener("click", () => void revokeSecret(revoke, secret));
    actions.append(revoke);
  }
  row.append(actions);
  return row;
}

function stateName(state: SecretState): string {
  return (SecretState[state] ?? "UNSPECIFIED").replace(/^SECRET_STATE_/, "");
}

function when(ts: Timestamp | undefined): string {
  if (ts === undefined) return "";
  return timestampDate(ts).toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

// --- create ------------------------------------------------------------------

$("create").addEventListener("click", () =>
  void busy($("create"), async () => {
    const { integration } = await api().createIntegration({ organizationId });
    await show(integration);
    showStatus("Integration created. Generate a secret to let applications authenticate.");
  }),
);

// --- custom domain ---------------------------------------------------------

$<HTMLFormElement>("domain-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = $<HTMLInputElement>("custom-domain-input");
  void busy($("save-domain"), async () => {
    const customDomain = input.value.trim();
    const { integration } = await api().updateDomain({ organizationId, customDomain });
    input.value = "";
    await show(integration);
    showStatus(
      customDomain === ""
        ? "Back to the default domain."
        : "Custom domain set. It becomes the login domain once its TXT record is verified.",
    );
  });
});

$("verify-domain").addEventListener("click", () =>
  void busy($("verify-domain"), async () => {
    const { integration } = await api().verifyDomain({ organizationId });
    await show(integration);
    showStatus(`${integration?.domain ?? "The domain"} is verified and is now the login domain.`);
  }),
);

// --- copy --------------------------------------------------------------------

async function copy(button: HTMLElement, text: string): Promise<void> {
  await navigator.clipboard.writeText(text);
  const label = button.textContent;
  button.textContent = "Copied";
  setTimeout(() => (button.textContent = label), 1500);
}

$("copy-client-id").addEventListener("click", () =>
  void copy($("copy-client-id"), $("client-id").textContent ?? "").catch((err) => showError(err)),
);

// --- generate: the value is shown once ----------------------------------

const newSecretDialog = $<HTMLDialogElement>("new-secret-dialog");
const newSecretValue = $("new-secret-value");
const newSecretAlert = newSecretDialog.querySelector<HTMLElement>(".dialog-alert")!;
/** The value just generated; set only while its dialog is open. */
let newSecret: string | null = null;

$("generate").addEventListener("click", () =>
  void busy($("generate"), async () => {
    const response = await api().generateSecret({ organizationId });
    newSecret = response.clientSecret;
    response.clientSecret = "";
    newSecretValue.textContent = newSecret;
    newSecretDialog.showModal();
    // The tab behind the dialog shows the new pending secret's metadata.
    await load();
  }),
);

/** Removes the value from the page and the dialog, at once. */
function closeNewSecret(): void {
  newSecret = null;
  newSecretValue.textContent = "";
  newSecretAlert.textContent = "";
  newSecretAlert.hidden = true;
  if (newSecretDialog.open) newSecretDialog.close();
}
// However else the dialog closes (Escape), the value goes too.
newSecretDialog.addEventListener("close", closeNewSecret);

$("copy-new-secret").addEventListener("click", () => {
  if (newSecret !== null) {
    void copy($("copy-new-secret"), newSecret).catch((err) => showError(err, newSecretAlert));
  }
});

$("activate-later").addEventListener("click", () => {
  closeNewSecret();
  showStatus("The new secret is pending. Activate it once your application is configured with it.");
});

$("activate-now").addEventListener("click", () =>
  void busy(
    $("activate-now"),
    async () => {
      if (newSecret === null) return;
      const { integration } = await api().activateSecret({ organizationId, clientSecret: newSecret });
      closeNewSecret();
      await show(integration);
      showActivated(integration);
    },
    newSecretAlert,
  ),
);

function showActivated(integration: Integration | undefined): void {
  const hint = integration?.activeSecret?.hint;
  showStatus(`The secret ending in ${hint ?? "?"} is active; the previous one no longer works.`);
}

// --- activate by typing the value ---------------------------------------

const activateDialog = $<HTMLDialogElement>("activate-dialog");
const activateValue = $<HTMLInputElement>("activate-value");
const activateAlert = activateDialog.querySelector<HTMLElement>(".dialog-alert")!;

$("open-activate").addEventListener("click", () => {
  clearMessages();
  activateDialog.showModal();
  activateValue.focus();
});

$<HTMLFormElement>("activate-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  void busy(
    $("activate-submit"),
    async () => {
      const { integration } = await api().activateSecret({
        organizationId,
        clientSecret: activateValue.value.trim(),
      });
      closeActivate();
      await show(integration);
      showActivated(integration);
    },
    activateAlert,
  );
});

/** Empties the typed value and closes the dialog, at once. */
function closeActivate(): void {
  activateValue.value = "";
  activateAlert.textContent = "";
  activateAlert.hidden = true;
  if (activateDialog.open) activateDialog.close();
}
$("activate-cancel").addEventListener("click", closeActivate);
activateDialog.addEventListener("close", closeActivate);

// --- emergency revoke ------------------------------------------------------

const confirmDialog = $<HTMLDialogElement>("confirm-dialog");

function confirmRevoke(secret: Secret): Promise<boolean> {
  const active = secret.state === SecretState.ACTIVE;
  $("confirm-text").textContent = active
    ? `The active secret ending in ${secret.hint} stops working at once, and applications ` +
      "cannot authenticate until another secret is activated."
    : `The pending secret ending in ${secret.hint} is discarded and can never be activated.`;
  confirmDialog.returnValue = "";
  confirmDialog.showModal();
  return new Promise((resolve) =>
    confirmDialog.addEventListener("close", () => resolve(confirmDialog.returnValue === "yes"), { once: true }),
  );
}
$("confirm-yes").addEventListener("click", () => confirmDialog.close("yes"));
$("confirm-no").addEventListener("click", () => confirmDialog.close("no"));

async function revokeSecret(button: HTMLElement, secret: Secret): Promise<void> {
  if (!(await confirmRevoke(secret))) return;
  await busy(button, async () => {
    const { integration } = await api().revokeSecret({ organizationId, secretId: secret.id });
    await show(integration);
    showStatus(`The secret ending in ${secret.hint} is retired.`);
  });
}
