/**
 * The unsubscribe link of marketing and nurture emails: /email/unsubscribe/<token>, where the token
 * is signed by the database (app_private.email_unsubscribe_token).
 *
 *   GET  shows a page naming the business and the address, with one button. It changes nothing,
 *        because mail security scanners open every link of an email.
 *   POST records the opt-out: from that button (form body, source unsubscribe_link) or from the mail
 *        program's own unsubscribe button (RFC 8058 one-click: body List-Unsubscribe=One-Click, source
 *        list_unsubscribe). Idempotent.
 * A cut or altered token gets 400, an email that no longer exists 404; nothing is written then.
 */
import express, { type Response } from "express";
import type pg from "pg";

interface PgError extends Error {
  code?: string;
}

interface PageRow {
  business_name: string;
  email: string;
  unsubscribed: boolean;
}

const escapeHtml = (value: string): string =>
  value.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

function page(res: Response, status: number, title: string, body: string): void {
  res
    .status(status)
    .type("html")
    .set("cache-control", "no-store")
    .set("referrer-policy", "no-referrer")
    .send(
      `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">` +
        `<meta name="robots" content="noindex"><title>${escapeHtml(title)}</title></head>` +
        `<body style="font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem">` +
        `<h1 style="font-size:1.4rem">${escapeHtml(title)}</h1>${body}</body></html>`,
    );
}

function fail(res: Response, error: unknown): void {
  const code = (error as PgError).code;
  if (code === "22023") {
    page(res, 400, "This link does not work", `<p>${escapeHtml((error as Error).message)}.</p>`);
  } else if (code === "P0002") {
    page(res, 404, "This link has expired", `<p>${escapeHtml((error as Error).message)}.</p>`);
  } else {
    console.error(`[unsubscribe] ${(error as Error).message}`);
    page(res, 500, "Something went wrong", "<p>Nothing was changed. Please try again in a moment.</p>");
  }
}

export function unsubscribeRoutes(options: { ownerPool: pg.Pool }): express.Router {
  const router = express.Router();
  router.use(express.urlencoded({ extended: false, limit: "10kb", parameterLimit: 10 }));

  router.get("/:token", async (req, res) => {
    try {
      const { rows } = await options.ownerPool.query<PageRow>("select * from app_private.unsubscribe_page($1)", [req.params.token]);
      const row = rows[0]!;
      if (row.unsubscribed) {
        page(res, 200, "You are unsubscribed", `<p><strong>${escapeHtml(row.email)}</strong> receives no more emails from ${escapeHtml(row.business_name)}.</p>`);
        return;
      }
      page(
        res,
        200,
        `Unsubscribe from ${row.business_name}`,
        `<p>Stop all marketing and follow-up emails from ${escapeHtml(row.business_name)} to <strong>${escapeHtml(row.email)}</strong>?</p>` +
          `<form method="post"><button type="submit" style="font-size:1rem;padding:.5rem 1rem">Unsubscribe</button></form>`,
      );
    } catch (error) {
      fail(res, error);
    }
  });

  router.post("/:token", async (req, res) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const source = body["List-Unsubscribe"] === "One-Click" ? "list_unsubscribe" : "unsubscribe_link";
    try {
      const { rows } = await options.ownerPool.query<PageRow>("select * from app_private.unsubscribe_email($1, $2)", [req.params.token, source]);
      const row = rows[0]!;
      page(res, 200, "You are unsubscribed", `<p><strong>${escapeHtml(row.email)}</strong> receives no more emails from ${escapeHtml(row.business_name)}.</p>`);
    } catch (error) {
      fail(res, error);
    }
  });
  return router;
}
