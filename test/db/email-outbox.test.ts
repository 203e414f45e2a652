/**
 * The email outbox rules, in SQL: the suppression list (SB001, case-insensitive, transactional
 * excepted), do-not-contact leads, bad input, idempotency keys (also under concurrency), the claim
 * that prevents duplicate sends and renders the unsubscribe footer, the signed unsubscribe token,
 * settling an email whose outcome was lost, the per-tenant clock, and what a member may do.
 */
import { randomUUID } from "node:crypto";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { addMember, becomeRoot, becomeUser, db, expectSqlError, registerUser, withRootDb, type RegisteredUser } from "../helpers.ts";

const address = (label = "lead") => `${label}-${randomUUID().slice(0, 8)}@example.test`;

async function lead(client: pg.ClientBase, tenant: string, email: string | null, status = "new"): Promise<string> {
  const { rows } = await client.query(
    "insert into app_public.leads (tenant_id, email, phone, status, source) values ($1, $2, $3, $4, 'test') returning id",
    [tenant, email, email ? null : "+13055550100", status],
  );
  return rows[0].id;
}

async function queue(
  client: pg.ClientBase,
  tenant: string,
  to: string,
  purpose: string,
  extra: { subject?: string; body?: string; key?: string | null; at?: string | null; lead?: string | null; html?: string | null } = {},
) {
  const { rows } = await client.query(
    "select * from app_private.queue_email($1, $2, $3, $4, $5, $6, null, $7, $8, $9::timestamptz)",
    [tenant, to, extra.subject ?? "Your quote", extra.body ?? "Hello there", purpose, extra.lead ?? null, extra.key ?? null, extra.html ?? null, extra.at ?? null],
  );
  return rows[0];
}

async function claim(client: pg.ClientBase, id: string) {
  const { rows } = await client.query("select * from app_private.claim_outbound_email($1, 'https://sb.example.com/', 'example.com')", [id]);
  return rows[0] ?? null;
}

describe("the email outbox guard", () => {
  it("refuses every purpose but transactional to a suppressed address with SB001, whatever its letter case", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const to = address();
      await client.query("insert into app_public.email_suppressions (tenant_id, email, source) values ($1, $2, 'manual')", [owner.tenant_id, to.toUpperCase()]);
      for (const purpose of ["notification", "marketing", "nurture"]) {
        const error = await expectSqlError(client, "SB001", () => queue(client, owner.tenant_id!, to, purpose));
        expect(error.message).toContain("suppression list");
      }
      expect((await queue(client, owner.tenant_id!, to, "transactional")).status).toBe("queued");
      // Another tenant's list does not apply.
      const other = await registerUser(client);
      expect((await queue(client, other.tenant_id!, to, "marketing")).status).toBe("queued");
    });
  });

  it("refuses marketing and nurture to a lead marked do-not-contact, but not a transactional email", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const to = address();
      const id = await lead(client, owner.tenant_id!, to, "dnc");
      await expectSqlError(client, "SB001", () => queue(client, owner.tenant_id!, to, "marketing", { lead: id }));
      await expectSqlError(client, "SB001", () => queue(client, owner.tenant_id!, to, "nurture", { lead: id }));
      expect((await queue(client, owner.tenant_id!, to, "transactional", { lead: id })).status).toBe("queued");
    });
  });

  it.each([
    ["an invalid address", { to: "not-an-address" }, /not a valid email address/],
    ["an empty subject", { subject: "   " }, /needs a subject/],
    ["a subject with a line break (header injection)", { subject: "Hi\r\nBcc: victim@example.test" }, /one line/],
    ["a subject over 998 characters", { subject: "x".repeat(999) }, /998 characters/],
    ["an empty body", { body: "" }, /needs a body/],
    ["a body over 200000 characters", { body: "x".repeat(200_001) }, /200000 characters/],
    ["an unknown purpose", { purpose: "spam" }, /purpose must be/],
  ])("refuses %s with 22023 and a clear message, writing nothing", async (_what, bad: { to?: string; subject?: string; body?: string; purpose?: string }, message) => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const error = await expectSqlError(client, "22023", () =>
        queue(client, owner.tenant_id!, bad.to ?? address(), bad.purpose ?? "marketing", { subject: bad.subject, body: bad.body }),
      );
      expect(error.message).toMatch(message);
      expect((await client.query("select count(*)::int as n from app_public.email_messages where tenant_id = $1", [owner.tenant_id])).rows[0].n).toBe(0);
    });
  });

  it("keeps a 100,000-character body and a non-ASCII subject whole", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const body = "Grüße — ".repeat(12_500);
      const email = await queue(client, owner.tenant_id!, address(), "marketing", { subject: "Café — 20% off", body });
      expect(email.body_text).toBe(body);
      expect(email.subject).toBe("Café — 20% off");
    });
  });
});

describe("idempotency", () => {
  it("returns the first email for a repeated key, in one transaction", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const to = address();
      const first = await queue(client, owner.tenant_id!, to, "marketing", { key: "promo-1" });
      const again = await queue(client, owner.tenant_id!, to, "marketing", { key: "promo-1", subject: "Something else" });
      expect(again.id).toBe(first.id);
      expect(again.subject).toBe("Your quote");
    });
  });

  it("gives one row for one key queued by 8 connections at once", async () => {
    const pool = new pg.Pool({ connectionString: db.rootUrl, max: 8 });
    const setup = await pool.connect();
    let tenant = "";
    try {
      tenant = (await registerUser(setup)).tenant_id!;
    } finally {
      setup.release();
    }
    try {
      const to = address();
      const ids = await Promise.all(
        Array.from({ length: 8 }, () =>
          pool.query("select id from app_private.queue_email($1, $2, 'Hi', 'Body', 'marketing', null, null, 'same-key')", [tenant, to]).then((r) => r.rows[0].id),
        ),
      );
      expect(new Set(ids).size).toBe(1);
      expect((await pool.query("select count(*)::int as n from app_public.email_messages where tenant_id = $1", [tenant])).rows[0].n).toBe(1);
      const { rows: jobs } = await pool.query(
        "select count(*)::int as n from graphile_worker._private_jobs where key = 'email_send:' || $1",
        [ids[0]],
      );
      expect(jobs[0].n).toBe(1);
    } finally {
      await pool.query("delete from app_public.tenants where id = $1", [tenant]);
      await pool.query("delete from graphile_worker._private_jobs where key like 'email_send:%' and payload->>'email_id' not in (select id::text from app_public.email_messages)");
      await pool.end();
    }
  });
});

describe("suppression", () => {
  it("cancels every queued email to the address at once, but not a transactional one nor one already sent", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const to = address();
      const marketing = await queue(client, owner.tenant_id!, to, "marketing");
      const nurture = await queue(client, owner.tenant_id!, to, "nurture");
      const receipt = await queue(client, owner.tenant_id!, to, "transactional");
      const sent = await queue(client, owner.tenant_id!, to, "marketing");
      await claim(client, sent.id);
      await client.query("select app_private.record_email_sent($1, null, '250 ok')", [sent.id]);
      await client.query("insert into app_public.email_suppressions (tenant_id, email, source) values ($1, $2, 'manual')", [owner.tenant_id, to]);
      const { rows } = await client.query("select id, status from app_public.email_messages where tenant_id = $1", [owner.tenant_id]);
      const status = Object.fromEntries(rows.map((r) => [r.id, r.status]));
      expect(status).toEqual({ [marketing.id]: "canceled", [nurture.id]: "canceled", [receipt.id]: "queued", [sent.id]: "sent" });
    });
  });
});

describe("the claim (step 1 of email__send)", () => {
  it("turns a due email into sending once, with our Message-ID, and adds the signed unsubscribe link to marketing only", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client, { businessName: "Ace <Plumbing> & Sons" });
      const marketing = await queue(client, owner.tenant_id!, address(), "marketing", { html: "<p>Hello</p>" });
      const claimed = await claim(client, marketing.id);
      expect(claimed.message_id).toBe(`<${marketing.id}@example.com>`);
      expect(claimed.unsubscribe_url).toMatch(new RegExp(`^https://sb\\.example\\.com/email/unsubscribe/${marketing.id}\\.[A-Za-z0-9_-]{43}$`));
      expect(claimed.body_text).toContain(`Hello there\n\n--\nAce <Plumbing> & Sons\n100 Main Street, Springfield, IL 62701\n`);
      expect(claimed.body_html).toContain("Ace &lt;Plumbing&gt; &amp; Sons<br>100 Main Street, Springfield, IL 62701<br>");
      expect(claimed.body_text).toContain(claimed.unsubscribe_url);
      expect(claimed.body_html).toContain(`<a href="${claimed.unsubscribe_url}">Unsubscribe</a>`);
      expect(claimed.body_html).toContain("Ace &lt;Plumbing&gt; &amp; Sons");
      expect(await claim(client, marketing.id)).toBeNull();
      const { rows } = await client.query("select status, attempts, message_id_header from app_public.email_messages where id = $1", [marketing.id]);
      expect(rows[0]).toEqual({ status: "sending", attempts: 1, message_id_header: claimed.message_id });

      const notification = await queue(client, owner.tenant_id!, address("owner"), "notification");
      const plain = await claim(client, notification.id);
      expect(plain.unsubscribe_url).toBeNull();
      expect(plain.body_text).toBe("Hello there");
    });
  });

  it("CAN-SPAM: a business without a postal address sends no marketing or nurture email (55000); one removed after queuing cancels the email at the claim", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client, { postalAddress: null });
      for (const purpose of ["marketing", "nurture"]) {
        const error = await expectSqlError(client, "55000", () => queue(client, owner.tenant_id!, address(), purpose));
        expect(error.message).toContain("postal address");
      }
      // What is not commercial still goes.
      expect((await queue(client, owner.tenant_id!, address(), "transactional")).status).toBe("queued");
      expect((await queue(client, owner.tenant_id!, address("owner"), "notification")).status).toBe("queued");
      // With an address it goes; removed before the claim, the email is canceled, not sent without it.
      await client.query("update app_public.tenants set business_address = '1 Harbor Way, Miami, FL 33101' where id = $1", [owner.tenant_id]);
      const queued = await queue(client, owner.tenant_id!, address(), "marketing");
      await client.query("update app_public.tenants set business_address = null where id = $1", [owner.tenant_id]);
      expect(await claim(client, queued.id)).toBeNull();
      const { rows } = await client.query("select status, error_message from app_public.email_messages where id = $1", [queued.id]);
      expect(rows[0].status).toBe("canceled");
      expect(rows[0].error_message).toContain("postal address");
    });
  });

  it("does not claim an email that is not due yet, and moves its job instead", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const later = await queue(client, owner.tenant_id!, address(), "marketing", { at: new Date(Date.now() + 3_600_000).toISOString() });
      expect(await claim(client, later.id)).toBeNull();
      expect((await client.query("select status from app_public.email_messages where id = $1", [later.id])).rows[0].status).toBe("queued");
    });
  });

  it("cancels at the last moment an email whose address unsubscribed after it was queued", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const to = address();
      const email = await queue(client, owner.tenant_id!, to, "marketing");
      // Bypass the trigger that cancels at once, to prove the claim checks again on its own.
      await client.query("alter table app_public.email_suppressions disable trigger _500_cancel_pending");
      await client.query("insert into app_public.email_suppressions (tenant_id, email, source) values ($1, $2, 'manual')", [owner.tenant_id, to]);
      await client.query("alter table app_public.email_suppressions enable trigger _500_cancel_pending");
      expect(await claim(client, email.id)).toBeNull();
      const { rows } = await client.query("select status, error_message from app_public.email_messages where id = $1", [email.id]);
      expect(rows[0].status).toBe("canceled");
      expect(rows[0].error_message).toContain("checked again before sending");
    });
  });
});

describe("the unsubscribe token", () => {
  it("is accepted whole, refused cut, altered or moved to another email (22023), and unsubscribes once", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client, { businessName: "Ace Plumbing" });
      const to = address();
      const first = await queue(client, owner.tenant_id!, to, "marketing");
      const second = await queue(client, owner.tenant_id!, to, "nurture");
      const token = (await client.query("select app_private.email_unsubscribe_token($1) as t", [first.id])).rows[0].t as string;
      const page = await client.query("select * from app_private.unsubscribe_page($1)", [token]);
      expect(page.rows[0]).toMatchObject({ business_name: "Ace Plumbing", email: to, unsubscribed: false });

      const signature = token.split(".")[1]!;
      const altered = `${token.slice(0, -1)}${token.endsWith("A") ? "B" : "A"}`;
      for (const bad of [token.slice(0, -5), altered, `${second.id}.${signature}`, "", "../../etc/passwd"]) {
        const error = await expectSqlError(client, "22023", () => client.query("select * from app_private.unsubscribe_email($1, 'unsubscribe_link')", [bad]));
        expect(error.message).toMatch(/unsubscribe link is not/);
      }

      const done = await client.query("select * from app_private.unsubscribe_email($1, 'list_unsubscribe')", [token]);
      expect(done.rows[0]).toMatchObject({ email: to, unsubscribed: true });
      await client.query("select * from app_private.unsubscribe_email($1, 'unsubscribe_link')", [token]);
      const { rows } = await client.query("select email, source, email_message_id from app_public.email_suppressions where tenant_id = $1", [owner.tenant_id]);
      expect(rows).toEqual([{ email: to, source: "list_unsubscribe", email_message_id: first.id }]);
      expect((await client.query("select status from app_public.email_messages where id = $1", [second.id])).rows[0].status).toBe("canceled");
    });
  });
});

describe("settling an email whose outcome was lost", () => {
  it("found → sent, certainly absent → queued again, unknown → uncertain (and a late answer still makes it sent)", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const settle = async (found: boolean | null) => {
        const email = await queue(client, owner.tenant_id!, address(), "marketing");
        await claim(client, email.id);
        const { rows } = await client.query("select app_private.settle_email($1, $2) as status", [email.id, found]);
        return { id: email.id as string, status: rows[0].status as string };
      };
      expect((await settle(true)).status).toBe("sent");
      expect((await settle(false)).status).toBe("queued");
      const unknown = await settle(null);
      expect(unknown.status).toBe("uncertain");
      // An uncertain email is never claimed again.
      expect(await claim(client, unknown.id)).toBeNull();
      expect((await client.query("select app_private.record_email_sent($1, null, '250 late') as ok", [unknown.id])).rows[0].ok).toBe(true);
      // A settled email is left alone.
      expect((await client.query("select app_private.settle_email($1, false) as status", [unknown.id])).rows[0].status).toBe("sent");
    });
  });

  it("a 4xx answer queues it again after the delay; a 5xx answer fails it for good", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const retry = await queue(client, owner.tenant_id!, address(), "marketing");
      await claim(client, retry.id);
      await client.query("select app_private.release_email_for_retry($1, '451 try later', 120)", [retry.id]);
      const { rows } = await client.query("select status, scheduled_for > now() + interval '119 seconds' as later from app_public.email_messages where id = $1", [retry.id]);
      expect(rows[0]).toEqual({ status: "queued", later: true });

      const refused = await queue(client, owner.tenant_id!, address(), "marketing");
      await claim(client, refused.id);
      await client.query("select app_private.record_email_failed($1, 550, '550 no such user')", [refused.id]);
      const { rows: failed } = await client.query("select status, error_code from app_public.email_messages where id = $1", [refused.id]);
      expect(failed[0]).toEqual({ status: "failed", error_code: 550 });
    });
  });
});

describe("the clock of a tenant", () => {
  it("moves forward for one tenant only, makes its future emails due, and places their jobs at the matching real time", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const other = await registerUser(client);
      const at = new Date(Date.now() + 2 * 86_400_000).toISOString();
      const email = await queue(client, owner.tenant_id!, address(), "marketing", { at });
      const jobAt = async () =>
        new Date((await client.query("select run_at from graphile_worker._private_jobs where key = $1", [`email_send:${email.id}`])).rows[0].run_at).getTime();
      expect(Math.abs((await jobAt()) - new Date(at).getTime())).toBeLessThan(1000);
      expect(await claim(client, email.id)).toBeNull();

      const { rows } = await client.query("select app_private.advance_clock($1, interval '2 days 1 minute') as now", [owner.tenant_id]);
      expect(new Date(rows[0].now).getTime()).toBeGreaterThan(new Date(at).getTime());
      // Woken: the job now runs at once on real time.
      expect((await jobAt()) - Date.now()).toBeLessThan(5_000);
      const { rows: clocks } = await client.query(
        "select app_hidden.clock_now($1) - now() as mine, app_hidden.clock_now($2) - now() as theirs",
        [owner.tenant_id, other.tenant_id],
      );
      expect(clocks[0].mine).toMatchObject({ days: 2, minutes: 1 });
      expect(clocks[0].theirs).toEqual({});
      expect((await claim(client, email.id))?.id).toBe(email.id);

      for (const bad of ["0 seconds", "-1 hour", "3651 days"]) {
        await expectSqlError(client, "22023", () => client.query("select app_private.advance_clock($1, $2::interval)", [owner.tenant_id, bad]));
      }
    });
  });
});

describe("what a member may do", () => {
  it("queues an email to a lead with queue_email, with clear errors for no lead, no address and a purpose members may not use", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const agent: RegisteredUser = await addMember(client, owner.tenant_id!, "agent");
      const withEmail = await lead(client, owner.tenant_id!, address());
      const withoutEmail = await lead(client, owner.tenant_id!, null);
      await becomeUser(client, agent);
      const { rows } = await client.query("select status, purpose, lead_id, from_name from app_public.queue_email($1, 'Quote', 'Here it is')", [withEmail]);
      expect(rows[0]).toEqual({ status: "queued", purpose: "marketing", lead_id: withEmail, from_name: "Test Plumbing" });
      await expectSqlError(client, "22023", () => client.query("select app_public.queue_email($1, 'Quote', 'Here it is')", [withoutEmail]));
      await expectSqlError(client, "P0002", () => client.query("select app_public.queue_email($1, 'Quote', 'Here it is')", [randomUUID()]));
      await expectSqlError(client, "22023", () => client.query("select app_public.queue_email($1, 'Quote', 'Here it is', 'nurture')", [withEmail]));
    });
  });

  it("adds an address to the suppression list by hand, but cannot pretend it came from an unsubscribe link or call the outbox internals", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      await becomeUser(client, owner);
      const to = address();
      const { rows } = await client.query("insert into app_public.email_suppressions (email, reason) values ($1, 'asked on the phone') returning source, added_by_user_id", [to]);
      expect(rows[0]).toEqual({ source: "manual", added_by_user_id: owner.user_id });
      await expectSqlError(client, "42501", () =>
        client.query("insert into app_public.email_suppressions (email, source) values ($1, 'unsubscribe_link')", [address()]),
      );
      await expectSqlError(client, "42501", () => client.query("select app_private.advance_clock($1, interval '1 day')", [owner.tenant_id]));
      await expectSqlError(client, "42501", () => client.query("select * from app_private.claim_outbound_email($1, 'x', 'y')", [randomUUID()]));
      await expectSqlError(client, "42501", () => client.query("update app_public.email_messages set status = 'sent'"));
      await becomeRoot(client);
    });
  });
});
