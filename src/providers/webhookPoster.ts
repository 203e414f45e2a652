/**
 * POSTs one signed webhook (Standard Webhooks, through the `standardwebhooks` package) to a receiver,
 * refusing targets on private networks (SSRF) unless the deployment allows them.
 *
 * The address check happens where the connection is made: a literal address is checked before the
 * request, a host name in the socket's own `lookup`, so the address checked is the address connected
 * to (a name that resolves to a public address when checked and to 127.0.0.1 when used cannot slip
 * through). Redirects are not followed: a 3xx answer is a failed attempt, like any other non-2xx.
 */
import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import http from "node:http";
import https from "node:https";
import type { LookupFunction } from "node:net";
import { isIP } from "node:net";
import ipaddr from "ipaddr.js";
import { Webhook } from "standardwebhooks";

export interface WebhookPost {
  url: string;
  /** The event id: the webhook-id header, the same for every attempt and redelivery. */
  id: string;
  /** The exact body; the signatures cover these bytes. */
  payload: string;
  /** The endpoint's current secrets (whsec_…), newest first: each signs, so a receiver holding either verifies. */
  secrets: string[];
  timeoutMs: number;
  allowPrivateTargets: boolean;
  /** When the message is signed (default now); the webhook-timestamp header. */
  at?: Date;
}

export interface WebhookAnswer {
  status: number | null;
  error: string | null;
  body: string;
  durationMs: number;
}

const MAX_BODY = 1000;

/** Why an address may not be a webhook target, or null when it is a public unicast address. */
export function privateAddressReason(address: string): string | null {
  if (!ipaddr.isValid(address)) return `${address} is not an IP address`;
  let parsed = ipaddr.parse(address);
  if (parsed.kind() === "ipv6") {
    const v6 = parsed as ipaddr.IPv6;
    if (v6.isIPv4MappedAddress()) parsed = v6.toIPv4Address();
    // IPv4-compatible (::a.b.c.d, deprecated): ipaddr calls these unicast, but they carry an IPv4 address.
    else if (v6.parts.slice(0, 6).every((part) => part === 0) && v6.range() !== "unspecified" && v6.range() !== "loopback")
      return `${address} is an IPv4-compatible IPv6 address`;
  }
  const range = parsed.range();
  return range === "unicast" ? null : `${address} is a ${range} address`;
}

/** The signature header: one v1 signature per secret, space-separated (the Standard Webhooks form for rotation). */
export function webhookSignature(secrets: string[], id: string, at: Date, payload: string): string {
  return secrets.map((secret) => new Webhook(secret).sign(id, at, payload)).join(" ");
}

function guardedLookup(allowPrivate: boolean): LookupFunction {
  return (hostname, options, callback) => {
    dnsLookup(hostname, { ...options, all: true }, (error, addresses) => {
      if (error) return callback(error, "", 0);
      const list = addresses as LookupAddress[];
      if (!allowPrivate) {
        for (const { address } of list) {
          const reason = privateAddressReason(address);
          if (reason) return callback(Object.assign(new Error(`refused target: ${hostname} resolves to ${reason} (SSRF protection)`), { code: "EWEBHOOKTARGET" }), "", 0);
        }
      }
      const first = list[0];
      if (!first) return callback(Object.assign(new Error(`${hostname} has no address`), { code: "ENOTFOUND" }), "", 0);
      if ((options as { all?: boolean }).all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, list);
      return callback(null, first.address, first.family);
    });
  };
}

export async function postWebhook(post: WebhookPost): Promise<WebhookAnswer> {
  const started = performance.now();
  const done = (status: number | null, error: string | null, body = ""): WebhookAnswer => ({
    status,
    error,
    body,
    durationMs: Math.round(performance.now() - started),
  });
  let url: URL;
  try {
    url = new URL(post.url);
  } catch {
    return done(null, "invalid URL");
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return done(null, "the URL must be http(s)");
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  if (isIP(host) && !post.allowPrivateTargets) {
    const reason = privateAddressReason(host);
    if (reason) return done(null, `refused target: ${reason} (SSRF protection)`);
  }
  const at = post.at ?? new Date();
  const headers = {
    "content-type": "application/json",
    "user-agent": "Switchboard-Webhooks/1",
    "webhook-id": post.id,
    "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
    "webhook-signature": webhookSignature(post.secrets, post.id, at, post.payload),
  };
  const transport = url.protocol === "https:" ? https : http;
  return new Promise<WebhookAnswer>((resolve) => {
    let settled = false;
    const finish = (answer: WebhookAnswer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(answer);
    };
    const request = transport.request(
      url,
      { method: "POST", headers: { ...headers, "content-length": Buffer.byteLength(post.payload) }, lookup: guardedLookup(post.allowPrivateTargets), agent: false },
      (response) => {
        let body = "";
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => {
          if (body.length < MAX_BODY) body += chunk;
          if (body.length >= MAX_BODY) response.destroy();
        });
        const end = (): void => finish(done(response.statusCode ?? null, null, body.slice(0, MAX_BODY)));
        response.on("end", end);
        response.on("close", end);
        response.on("error", end);
      },
    );
    const timer = setTimeout(() => {
      request.destroy(Object.assign(new Error(`no answer within ${post.timeoutMs} ms`), { code: "ETIMEDOUT" }));
    }, post.timeoutMs);
    request.on("error", (error: NodeJS.ErrnoException) => finish(done(null, (error.message || error.code || "request failed").slice(0, 500))));
    request.end(post.payload);
  });
}
