/**
 * The dashboard's HTTP side without a browser: the token in the URL is traded for an HttpOnly
 * SameSite=Strict cookie and dropped from the URL; the cookie then opens pages and, from the
 * server's own origin only, the WebSocket; anything else gets a readable 401 page.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { WebSocket } from "ws";
import { ProtocolCore } from "../../src/server/core.js";
import { COOKIE_NAME, answer, cookieValue } from "../../src/server/http.js";
import { listen } from "../../src/server/ws.js";
import { FakeVm, fakeDirectory } from "../support/fake-vm.js";

const TOKEN = "tok-123";
const COOKIE = `${COOKIE_NAME}=${TOKEN}`;

test("a token in the URL sets the cookie and is redirected away, keeping the rest of the URL", () => {
  const a = answer("GET", "/?token=tok-123&x=1", undefined, TOKEN);
  assert.equal(a.kind, "redirect");
  if (a.kind !== "redirect") return;
  assert.equal(a.location, "/?x=1");
  assert.match(a.cookie, new RegExp(`^${COOKIE};`));
  for (const attr of ["HttpOnly", "SameSite=Strict", "Path=/"]) assert.ok(a.cookie.includes(attr), attr);
});

test("a wrong token, or none and no cookie, is a 401 that says what to open", () => {
  for (const [url, cookie] of [
    ["/?token=nope", undefined],
    ["/", undefined],
    ["/app.js", `${COOKIE_NAME}=other`],
    ["/", "unrelated=tok-123"],
  ] as const) {
    const a = answer("GET", url, cookie, TOKEN);
    assert.equal(a.kind, "error", url);
    if (a.kind !== "error") continue;
    assert.equal(a.status, 401, url);
    assert.match(a.text, /dashboard URL/);
  }
});

test("the cookie serves the page's files and nothing else; only GET and HEAD", () => {
  const files = ["/", "/app.js", "/app.css"].map((u) => answer("GET", u, `a=b; ${COOKIE}`, TOKEN));
  assert.deepEqual(
    files.map((f) => (f.kind === "file" ? f.file : f.kind)),
    ["index.html", "app.js", "app.css"],
  );
  const missing = answer("GET", "/../package.json", COOKIE, TOKEN);
  assert.equal(missing.kind === "error" && missing.status, 404);
  assert.equal(answer("GET", "/session", COOKIE, TOKEN).kind, "session");
  const post = answer("POST", "/", COOKIE, TOKEN);
  assert.equal(post.kind === "error" && post.status, 405);
});

test("cookieValue finds one cookie among several, and only by its exact name", () => {
  assert.equal(cookieValue("a=1; vmsight_token=xyz; b=2", COOKIE_NAME), "xyz");
  assert.equal(cookieValue("xvmsight_token=xyz", COOKIE_NAME), null);
  assert.equal(cookieValue(undefined, COOKIE_NAME), null);
});

function get(port: number, path: string, cookie?: string) {
  return new Promise<{ status: number; headers: Record<string, unknown>; body: string }>(
    (resolve, reject) => {
      const req = request({ host: "127.0.0.1", port, path, headers: cookie ? { cookie } : {} }, (res) => {
        let body = "";
        res.on("data", (d) => {
          body += d;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      });
      req.on("error", reject);
      req.end();
    },
  );
}

function wsOpens(url: string, headers: Record<string, string>): Promise<boolean> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { headers });
    ws.once("open", () => {
      ws.close();
      resolve(true);
    });
    ws.once("error", () => resolve(false));
  });
}

test("over TCP: the printed dashboard URL, the cookie, the page, and who may open the WebSocket", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vmsight-http-"));
  writeFileSync(join(dir, "index.html"), "<!doctype html><title>page</title>");
  const core = new ProtocolCore(fakeDirectory({ a: new FakeVm() }));
  const server = await listen(core, { tcp: { host: "127.0.0.1", port: 0 }, token: TOKEN, webDir: dir });
  try {
    const port = server.tcpPort ?? 0;
    assert.equal(server.dashboard, `http://127.0.0.1:${port}/?token=${TOKEN}`);
    const first = await get(port, `/?token=${TOKEN}`);
    assert.equal(first.status, 303);
    assert.equal(first.headers.location, "/");
    const setCookie = String((first.headers["set-cookie"] as string[] | undefined)?.[0]);
    const cookie = setCookie.split(";")[0] ?? "";
    assert.equal(cookie, COOKIE);
    const page = await get(port, "/", cookie);
    assert.equal(page.status, 200);
    assert.match(String(page.headers["content-security-policy"]), /default-src 'none'/);
    assert.match(page.body, /<title>page<\/title>/);
    const denied = await get(port, "/");
    assert.equal(denied.status, 401);
    assert.match(denied.body, /<h1>vmsight: not signed in<\/h1>/);
    const unbuilt = await get(port, "/app.js", cookie);
    assert.equal(unbuilt.status, 503, "a page not built says so");
    assert.match(unbuilt.body, /npm run build/);

    const ws = `ws://127.0.0.1:${port}/`;
    const own = `http://127.0.0.1:${port}`;
    assert.equal(await wsOpens(`${ws}?token=${TOKEN}`, {}), true, "the token alone (programs)");
    assert.equal(await wsOpens(ws, { cookie, origin: own }), true, "the cookie from the page's own origin");
    assert.equal(await wsOpens(ws, { cookie, origin: "http://127.0.0.1:1" }), false, "another origin");
    assert.equal(await wsOpens(ws, { cookie }), false, "no origin");
    assert.equal(await wsOpens(ws, { origin: own }), false, "no cookie");
  } finally {
    await server.close();
    await core.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
