/**
 * A fake SMTP server for tests: the `smtp-server` package on 127.0.0.1, a random port, no TLS,
 * everything in memory. Point the app at it with `new SmtpEmailProvider({ url: fake.url })`.
 *
 * Every accepted message is in `received`, with its envelope, the raw message, its headers
 * (lower-cased names, unfolded) and its decoded parts: the plain-text body and the html body
 * (quoted-printable and base64 decoded, CRLF turned into LF), the Subject with RFC 2047 encoded
 * words decoded. With `auth` the server requires AUTH PLAIN/LOGIN with those credentials (wrong
 * ones get 535); without it AUTH is optional and any credentials are accepted.
 *
 * Fault injection:
 *   - `rejectNext(count, code, message, at)`: the next `count` messages are refused with that
 *     reply at RCPT TO or after DATA (default), e.g. 550 or 451; they are not recorded.
 *   - `dropAfterDataNext(count)`: the next `count` messages are read whole and recorded, then the
 *     connection is destroyed without a reply: the server took the email, the client never heard.
 *
 * Also exports `startSilentServer` (accepts TCP connections and never says a word, for greeting
 * timeouts), `findHeader`, and the decoders `decodeHeaderWords` and `decodeBody`.
 */
import { createServer, type Server, type Socket } from "node:net";
import type { AddressInfo } from "node:net";
import { SMTPServer, type SMTPServerDataStream, type SMTPServerSession } from "smtp-server";

export interface ReceivedEmail {
  envelope: { from: string | null; to: string[] };
  /** The message as received, CRLF line endings. */
  raw: string;
  /** Header values by lower-cased name, unfolded, in order; a header sent twice has two values. */
  headers: Map<string, string[]>;
  /** The Message-ID header as sent, with angle brackets. */
  messageId: string | null;
  /** The Subject, encoded words decoded. */
  subject: string | null;
  /** The decoded text/plain part (LF line endings), or null when there is none. */
  text: string | null;
  /** The decoded text/html part (LF line endings), or null when there is none. */
  html: string | null;
}

export interface FakeSmtpOptions {
  /** Require AUTH with these credentials. */
  auth?: { user: string; pass: string };
}

export interface FakeSmtp {
  /** smtp://user:pass@127.0.0.1:port with auth, smtp://127.0.0.1:port without. */
  readonly url: string;
  readonly port: number;
  readonly received: ReceivedEmail[];
  /** The next `count` messages are refused with `code` at RCPT TO or at the end of DATA. */
  rejectNext(count: number, code: number, message?: string, at?: "rcpt" | "data"): void;
  /** The next `count` messages are recorded, then the connection is destroyed without a reply. */
  dropAfterDataNext(count: number): void;
  /** Resolves once `n` messages have been received in all; rejects after `timeoutMs`. */
  waitFor(n: number, timeoutMs?: number): Promise<ReceivedEmail[]>;
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Decoding (a tiny subset of MIME: what nodemailer produces)

/** Decodes RFC 2047 encoded words (=?UTF-8?Q?...?= and =?UTF-8?B?...?=) in a header value. */
export function decodeHeaderWords(value: string): string {
  const word = /=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=/g;
  // Whitespace between two adjacent encoded words is not part of the text (RFC 2047 section 6.2),
  // and a multibyte character may be split across words, so runs of words are decoded together.
  const pieces: Array<string | { charset: string; bytes: Buffer }> = [];
  let last = 0;
  for (let m = word.exec(value); m !== null; m = word.exec(value)) {
    const between = value.slice(last, m.index);
    const previous = pieces.at(-1);
    if (!(typeof previous === "object" && /^\s*$/.test(between))) pieces.push(between);
    const text = m[3]!;
    const bytes =
      m[2]!.toUpperCase() === "B" ? Buffer.from(text, "base64") : decodeQuotedPrintable(text.replace(/_/g, " "), false);
    pieces.push({ charset: m[1]!.toLowerCase(), bytes });
    last = m.index + m[0].length;
  }
  pieces.push(value.slice(last));
  let out = "";
  for (let i = 0; i < pieces.length; i++) {
    const piece = pieces[i]!;
    if (typeof piece === "string") {
      out += piece;
      continue;
    }
    const run = [piece.bytes];
    for (let next = pieces[i + 1]; typeof next === "object" && next.charset === piece.charset; next = pieces[i + 1]) {
      run.push(next.bytes);
      i++;
    }
    out += new TextDecoder(piece.charset).decode(Buffer.concat(run));
  }
  return out;
}

/** Quoted-printable to bytes; `soft` removes soft line breaks (=CRLF) first. */
function decodeQuotedPrintable(text: string, soft = true): Buffer {
  const input = soft ? text.replace(/=\r?\n/g, "") : text;
  const bytes: number[] = [];
  for (let i = 0; i < input.length; i++) {
    const hex = input.slice(i + 1, i + 3);
    if (input[i] === "=" && /^[0-9A-Fa-f]{2}$/.test(hex)) {
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      bytes.push(input.charCodeAt(i) & 0xff);
    }
  }
  return Buffer.from(bytes);
}

/** Decodes a part's body by its Content-Transfer-Encoding and charset; CRLF becomes LF. */
export function decodeBody(body: string, transferEncoding: string | null, charset: string | null): string {
  const encoding = (transferEncoding ?? "7bit").trim().toLowerCase();
  const bytes =
    encoding === "base64"
      ? Buffer.from(body.replace(/\s+/g, ""), "base64")
      : encoding === "quoted-printable"
        ? decodeQuotedPrintable(body)
        : Buffer.from(body, "latin1");
  return new TextDecoder(charset ?? "utf-8").decode(bytes).replace(/\r\n/g, "\n");
}

interface Part {
  headers: Map<string, string[]>;
  body: string;
}

function splitPart(raw: string): Part {
  const end = raw.search(/\r?\n\r?\n/);
  const head = end < 0 ? raw : raw.slice(0, end);
  const body = end < 0 ? "" : raw.slice(end).replace(/^\r?\n\r?\n/, "");
  const headers = new Map<string, string[]>();
  for (const line of head.replace(/\r?\n[ \t]+/g, " ").split(/\r?\n/)) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    headers.set(name, [...(headers.get(name) ?? []), line.slice(colon + 1).trim()]);
  }
  return { headers, body };
}

/** A header's value and its `; key=value` parameters (quotes removed). */
function headerParams(value: string | undefined): { value: string; params: Record<string, string> } {
  const [first = "", ...rest] = (value ?? "").split(";");
  const params: Record<string, string> = {};
  for (const param of rest) {
    const eq = param.indexOf("=");
    if (eq > 0) params[param.slice(0, eq).trim().toLowerCase()] = param.slice(eq + 1).trim().replace(/^"(.*)"$/, "$1");
  }
  return { value: first.trim().toLowerCase(), params };
}

/** The decoded text/plain and text/html leaves of a (possibly multipart) part. */
function textParts(part: Part): { text: string | null; html: string | null } {
  const type = headerParams(part.headers.get("content-type")?.[0] ?? "text/plain");
  if (type.value.startsWith("multipart/")) {
    const boundary = type.params.boundary;
    if (!boundary) return { text: null, html: null };
    const found: { text: string | null; html: string | null } = { text: null, html: null };
    const sections = part.body.split(`--${boundary}`).slice(1);
    for (const section of sections) {
      if (section.startsWith("--")) break;
      const inner = textParts(splitPart(section.replace(/^\r?\n/, "").replace(/\r?\n$/, "")));
      found.text ??= inner.text;
      found.html ??= inner.html;
    }
    return found;
  }
  const decoded = () =>
    decodeBody(part.body, part.headers.get("content-transfer-encoding")?.[0] ?? null, type.params.charset ?? null);
  if (type.value === "text/plain") return { text: decoded(), html: null };
  if (type.value === "text/html") return { text: null, html: decoded() };
  return { text: null, html: null };
}

/** Parses a raw message into a ReceivedEmail. */
export function parseEmail(raw: string, envelope: ReceivedEmail["envelope"]): ReceivedEmail {
  const root = splitPart(raw);
  const first = (name: string) => root.headers.get(name)?.[0] ?? null;
  const subject = first("subject");
  return {
    envelope,
    raw,
    headers: root.headers,
    messageId: first("message-id"),
    subject: subject === null ? null : decodeHeaderWords(subject),
    ...textParts(root),
  };
}

/** The first value of header `name` (any case), unfolded but not decoded; null when absent. */
export function findHeader(email: ReceivedEmail, name: string): string | null {
  return email.headers.get(name.toLowerCase())?.[0] ?? null;
}

// ---------------------------------------------------------------------------------------------
// Server

function smtpError(code: number, message: string): Error {
  return Object.assign(new Error(message), { responseCode: code });
}

async function readStream(stream: SMTPServerDataStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("latin1");
}

export async function startFakeSmtp(options: FakeSmtpOptions = {}): Promise<FakeSmtp> {
  const received: ReceivedEmail[] = [];
  const rejections: Array<{ code: number; message: string; at: "rcpt" | "data" }> = [];
  let drops = 0;
  const waiters = new Set<() => void>();
  // smtp-server does not hand its socket to onData; find it by the client's address and port.
  const sockets = new Map<string, Socket>();
  const socketKey = (address: string | undefined, port: number | undefined) => `${address}:${port}`;

  const server = new SMTPServer({
    secure: false,
    disabledCommands: ["STARTTLS"],
    authOptional: !options.auth,
    allowInsecureAuth: true,
    authMethods: ["PLAIN", "LOGIN"],
    logger: false,
    disableReverseLookup: true,
    closeTimeout: 100,
    onAuth(auth, _session, callback) {
      const expected = options.auth;
      if (expected && (auth.username !== expected.user || auth.password !== expected.pass)) {
        callback(smtpError(535, "5.7.8 Authentication credentials invalid"));
        return;
      }
      callback(null, { user: auth.username ?? "" });
    },
    onRcptTo(_address, _session, callback) {
      if (rejections[0]?.at === "rcpt") {
        const rejection = rejections.shift()!;
        callback(smtpError(rejection.code, rejection.message));
        return;
      }
      callback();
    },
    onData(stream: SMTPServerDataStream, session: SMTPServerSession, callback) {
      void readStream(stream).then((raw) => {
        if (rejections[0]?.at === "data") {
          const rejection = rejections.shift()!;
          callback(smtpError(rejection.code, rejection.message));
          return;
        }
        const from = session.envelope.mailFrom;
        received.push(
          parseEmail(raw, {
            from: from ? from.address : null,
            to: session.envelope.rcptTo.map((r) => r.address),
          }),
        );
        for (const wake of waiters) wake();
        if (drops > 0) {
          drops--;
          // Never answer: the client is left with a closed connection after sending everything.
          sockets.get(socketKey(session.remoteAddress, session.remotePort))?.destroy();
          return;
        }
        callback(null, "2.0.0 Ok: queued");
      }, callback);
    },
  });
  server.server.on("connection", (socket: Socket) => {
    const key = socketKey(socket.remoteAddress, socket.remotePort);
    sockets.set(key, socket);
    socket.once("close", () => sockets.delete(key));
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  // Errors on client connections (e.g. a client that hangs up) are not the test's business.
  server.on("error", () => undefined);
  const { port } = server.server.address() as AddressInfo;
  const credentials = options.auth
    ? `${encodeURIComponent(options.auth.user)}:${encodeURIComponent(options.auth.pass)}@`
    : "";

  return {
    url: `smtp://${credentials}127.0.0.1:${port}`,
    port,
    received,
    rejectNext(count, code, message = code >= 500 ? "5.1.1 Mailbox unavailable" : "4.3.0 Try again later", at = "data") {
      for (let i = 0; i < count; i++) rejections.push({ code, message, at });
    },
    dropAfterDataNext(count) {
      drops += count;
    },
    waitFor(n, timeoutMs = 5_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (received.length < n) return;
          cleanup();
          resolve(received);
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`The fake SMTP server received ${received.length} message(s) within ${timeoutMs} ms, expected ${n}`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    close() {
      for (const socket of sockets.values()) socket.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * A TCP server that accepts connections and never sends anything (no SMTP greeting), to test
 * greeting timeouts. `connections` counts accepted connections.
 */
export async function startSilentServer(): Promise<{ url: string; connections(): number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let count = 0;
  const server: Server = createServer((socket) => {
    count++;
    sockets.add(socket);
    socket.on("error", () => undefined);
    socket.once("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `smtp://127.0.0.1:${port}`,
    connections: () => count,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
