/**
 * The dashboard over HTTP on serve's TCP port. The token printed in the dashboard URL is
 * traded once for an HttpOnly SameSite=Strict cookie (and the URL loses it by a redirect, so
 * it stays out of history and bookmarks); later pages and the page's WebSocket present the
 * cookie. A cookie alone opens a WebSocket only from the server's own origin: another page on
 * the same host (same site for SameSite, another port) must not drive the guests.
 */
import { readFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { fileURLToPath } from "node:url";
import { tokenMatches } from "./token.js";

export const COOKIE_NAME = "vmsight_token";

/** Where `npm run build` puts the bundled page (dist/src/web, so the package carries it). */
export const DEFAULT_WEB_DIR = fileURLToPath(new URL("../web/", import.meta.url));

/** The files of the page; nothing else under the directory is served. */
const FILES: Readonly<Record<string, { file: string; type: string }>> = {
  "/": { file: "index.html", type: "text/html; charset=utf-8" },
  "/app.js": { file: "app.js", type: "text/javascript; charset=utf-8" },
  "/app.css": { file: "app.css", type: "text/css; charset=utf-8" },
};

const SECURITY_HEADERS = {
  "Content-Security-Policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "no-referrer",
  "Cache-Control": "no-store",
};

export function cookieHeader(token: string): string {
  return `${COOKIE_NAME}=${token}; HttpOnly; SameSite=Strict; Path=/`;
}

/** The value of one cookie in a Cookie header, or null. */
export function cookieValue(header: string | undefined, name: string): string | null {
  for (const part of (header ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}

function queryToken(req: IncomingMessage): string | null {
  return new URL(req.url ?? "/", "http://x").searchParams.get("token");
}

/** The origin a browser names for a page of this server, from the Host it asked for. */
function ownOrigin(req: IncomingMessage): string | undefined {
  return req.headers.host === undefined ? undefined : `http://${req.headers.host}`;
}

/**
 * A WebSocket upgrade is let in with the token in its URL (programs), or with the cookie from a
 * page of this very origin (the dashboard).
 */
export function upgradeAllowed(req: IncomingMessage, token: string): boolean {
  if (tokenMatches(queryToken(req), token)) return true;
  if (!tokenMatches(cookieValue(req.headers.cookie, COOKIE_NAME), token)) return false;
  return req.headers.origin !== undefined && req.headers.origin === ownOrigin(req);
}

export type HttpAnswer =
  | { readonly kind: "redirect"; readonly location: string; readonly cookie: string }
  | { readonly kind: "file"; readonly file: string; readonly type: string }
  | { readonly kind: "session" }
  | { readonly kind: "error"; readonly status: number; readonly title: string; readonly text: string };

/** What to answer to one request, decided without touching the socket or the disk. */
export function answer(method: string, url: string, cookie: string | undefined, token: string): HttpAnswer {
  if (method !== "GET" && method !== "HEAD")
    return { kind: "error", status: 405, title: "Method not allowed", text: "Only GET is served here." };
  const u = new URL(url, "http://x");
  const given = u.searchParams.get("token");
  if (given !== null) {
    if (!tokenMatches(given, token)) return unauthorized("The token in this URL is not this server's.");
    u.searchParams.delete("token");
    return { kind: "redirect", location: `${u.pathname}${u.search}`, cookie: cookieHeader(token) };
  }
  if (!tokenMatches(cookieValue(cookie, COOKIE_NAME), token))
    return unauthorized("This page needs the token that `vmsight serve` printed.");
  if (u.pathname === "/session") return { kind: "session" };
  const f = FILES[u.pathname];
  if (!f) return { kind: "error", status: 404, title: "Not found", text: `Nothing at ${u.pathname}.` };
  return { kind: "file", ...f };
}

function unauthorized(why: string): HttpAnswer {
  return {
    kind: "error",
    status: 401,
    title: "vmsight: not signed in",
    text: `${why} Open the dashboard URL that \`vmsight serve\` printed (http://HOST:PORT/?token=…); a restarted server has a new token.`,
  };
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export function errorPage(title: string, text: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head><body><h1>${escapeHtml(title)}</h1><p>${escapeHtml(text)}</p></body></html>\n`;
}

/** The request handler for serve's TCP HTTP server; `webDir` holds the bundled page. */
export function dashboardHandler(token: string, webDir: string) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const a = answer(req.method ?? "GET", req.url ?? "/", req.headers.cookie, token);
    const send = (
      status: number,
      type: string,
      body: string | Buffer,
      extra: Record<string, string> = {},
    ) => {
      res.writeHead(status, { ...SECURITY_HEADERS, "Content-Type": type, ...extra });
      res.end(req.method === "HEAD" ? undefined : body);
    };
    if (a.kind === "redirect") send(303, "text/plain", "", { Location: a.location, "Set-Cookie": a.cookie });
    else if (a.kind === "session") send(204, "text/plain", "");
    else if (a.kind === "error") send(a.status, "text/html; charset=utf-8", errorPage(a.title, a.text));
    else sendFile(a.file, a.type, send, webDir);
  };
}

function sendFile(
  file: string,
  type: string,
  send: (status: number, type: string, body: string | Buffer) => void,
  webDir: string,
): void {
  let body: Buffer;
  try {
    body = readFileSync(`${webDir}/${file}`);
  } catch {
    send(
      503,
      "text/html; charset=utf-8",
      errorPage("Dashboard not built", `${file} is missing from ${webDir}: run \`npm run build\`.`),
    );
    return;
  }
  send(200, type, body);
}
