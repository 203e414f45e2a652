/**
 * Budget ledger: written only through record_budget_transaction, which computes seq and balance_after
 * in the database, refuses overdrafts, and serialises concurrent writers on the tenant's account row.
 * The ledger is append-only, even for the owner.
 */
import pg from "pg";
import { describe, expect, it } from "vitest";
import { seedLedger } from "../fixtures/ledger.ts";
import {
  addMember,
  becomeAnonymous,
  becomeRoot,
  becomeUser,
  db,
  expectSqlError,
  poolFor,
  registerUser,
  rootPool,
  withRootDb,
  type RegisteredUser,
} from "../helpers.ts";

interface Txn {
  seq: string;
  transaction_type: string;
  amount: string;
  balance_after: string;
  lead_id: string | null;
  created_by_user_id: string | null;
}

/** Money as integer cents (numeric arrives as a string: no floating point anywhere). */
const cents = (value: string | number) => Math.round(Number(value) * 100);

async function record(client: pg.ClientBase, type: string | null, amount: string | number | null, leadId: string | null = null, description: string | null = null) {
  const { rows } = await client.query<Txn>(
    "select seq, transaction_type, amount, balance_after, lead_id, created_by_user_id from app_public.record_budget_transaction($1, $2, $3, $4)",
    [type, amount, leadId, description],
  );
  return rows[0]!;
}

async function ledgerState(client: pg.ClientBase, tenantId: string) {
  const { rows: txns } = await client.query<Txn>(
    "select seq, transaction_type, amount, balance_after, lead_id, created_by_user_id from app_public.budget_transactions where tenant_id = $1 order by seq",
    [tenantId],
  );
  const { rows: accounts } = await client.query<{ balance: string; last_seq: string; allow_negative: boolean }>(
    "select balance, last_seq, allow_negative from app_public.budget_accounts where tenant_id = $1",
    [tenantId],
  );
  return { txns, account: accounts[0] ?? null };
}

async function insertLead(client: pg.ClientBase, tenantId: string): Promise<string> {
  const phone = `+1312555${String(Math.floor(Math.random() * 10000)).padStart(4, "0")}`;
  const { rows } = await client.query<{ id: string }>(
    "insert into app_public.leads (tenant_id, first_name, phone) values ($1, 'Ledger', $2) returning id",
    [tenantId, phone],
  );
  return rows[0]!.id;
}

describe("budget ledger", () => {
  it("records deposits, purchases, refunds and adjustments with seq and balance_after computed by the database", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const leadId = await insertLead(client, owner.tenant_id!);
      const manager = await addMember(client, owner.tenant_id!, "manager");
      await becomeUser(client, manager);

      const a = await record(client, "deposit", "100.00", null, "  Top-up  ");
      const b = await record(client, "lead_purchase", -30, leadId, "Bought a lead");
      const c = await record(client, "refund", "12.50", leadId);
      const d = await record(client, "adjustment", "-7.25");
      expect([a, b, c, d].map((t) => [t.seq, t.transaction_type, t.amount, t.balance_after])).toEqual([
        ["1", "deposit", "100.00", "100.00"],
        ["2", "lead_purchase", "-30.00", "70.00"],
        ["3", "refund", "12.50", "82.50"],
        ["4", "adjustment", "-7.25", "75.25"],
      ]);
      expect(a.created_by_user_id).toBe(manager.user_id);
      expect(b.lead_id).toBe(leadId);

      // Managers read their ledger; the account follows it.
      const { txns, account } = await ledgerState(client, owner.tenant_id!);
      expect(txns).toHaveLength(4);
      expect(account).toEqual({ balance: "75.25", last_seq: "4", allow_negative: false });
      const { rows: desc } = await client.query("select description from app_public.budget_transactions where seq = 1");
      expect(desc[0].description).toBe("Top-up");
    });
  });

  it("refuses bad input with 22023 (or P0002 for a lead of another tenant) and writes nothing", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const other = await registerUser(client);
      const foreignLead = await insertLead(client, other.tenant_id!);
      await becomeUser(client, owner);
      await record(client, "deposit", 50);
      const before = await ledgerState(client, owner.tenant_id!);

      const cases: Array<[string, string | null, string | number | null, string | null, string | null, RegExp]> = [
        ["22023", "deposit", 0, null, null, /Amount is required and must not be zero/],
        ["22023", "deposit", "0.00", null, null, /must not be zero/],
        ["22023", "deposit", null, null, null, /Amount is required/],
        ["22023", "deposit", -5, null, null, /Amount of a deposit must be positive/],
        ["22023", "refund", -5, null, null, /Amount of a refund must be positive/],
        ["22023", "lead_purchase", 5, null, null, /Amount of a lead purchase must be negative/],
        ["22023", "bonus", 5, null, null, /Transaction type must be deposit, lead_purchase, refund or adjustment/],
        ["22023", null, 5, null, null, /Transaction type must be/],
        ["22023", "adjustment", "1.005", null, null, /at most 2 decimal places/],
        ["22023", "adjustment", "10000000000", null, null, /Amount must be less than/],
        ["22023", "deposit", 5, null, "x".repeat(1001), /Description must be at most 1000 characters/],
        ["P0002", "lead_purchase", -5, foreignLead, null, /Lead not found/],
      ];
      for (const [code, type, amount, leadId, description, message] of cases) {
        const error = await expectSqlError(client, code, () => record(client, type, amount, leadId, description));
        expect(error.message, `${type} ${amount}`).toMatch(message);
      }
      await expectSqlError(client, "22P02", () => record(client, "deposit", "ten"));
      expect(await ledgerState(client, owner.tenant_id!)).toEqual(before);
    });
  });

  it("only owners, admins and managers record or read the ledger; agents get 42501, anonymous 28000", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const admin = await addMember(client, owner.tenant_id!, "admin");
      const agent = await addMember(client, owner.tenant_id!, "agent");
      await becomeUser(client, admin);
      await record(client, "deposit", 10);

      await becomeUser(client, agent);
      const error = await expectSqlError(client, "42501", () => record(client, "deposit", 10));
      expect(error.message).toMatch(/Only owners, admins and managers can record budget transactions/);
      const visible = await client.query("select count(*)::int as n from app_public.budget_transactions");
      expect(visible.rows[0].n).toBe(0);
      const accounts = await client.query("select count(*)::int as n from app_public.budget_accounts");
      expect(accounts.rows[0].n).toBe(0);
      // Requests can't write the tables directly at all, nor reach the owner-only function.
      await expectSqlError(client, "42501", () =>
        client.query("insert into app_public.budget_transactions (tenant_id, seq, transaction_type, amount, balance_after) values ($1, 9, 'deposit', 1, 1)", [owner.tenant_id]),
      );
      await expectSqlError(client, "42501", () => client.query("select app_private.record_budget_transaction_for_tenant($1, 'deposit', 1)", [owner.tenant_id]));

      await becomeAnonymous(client);
      await expectSqlError(client, "28000", () => record(client, "deposit", 10));

      await becomeRoot(client);
      const { txns } = await ledgerState(client, owner.tenant_id!);
      expect(txns).toHaveLength(1);
    });
  });

  it("refuses a transaction that would overdraw (23514, exact message, nothing written) unless negative balances are allowed", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const manager = await addMember(client, owner.tenant_id!, "manager");
      const admin = await addMember(client, owner.tenant_id!, "admin");
      const leadId = await insertLead(client, owner.tenant_id!);

      await becomeUser(client, manager);
      // First use with a purchase: refused, and not even the account row is left behind.
      const first = await expectSqlError(client, "23514", () => record(client, "lead_purchase", -1, leadId));
      expect(first.message).toBe("Insufficient budget: balance 0.00, this lead purchase needs 1.00");
      await record(client, "deposit", 12);
      const before = await ledgerState(client, owner.tenant_id!);
      const error = await expectSqlError(client, "23514", () => record(client, "lead_purchase", -30, leadId));
      expect(error.message).toBe("Insufficient budget: balance 12.00, this lead purchase needs 30.00");
      const adjustment = await expectSqlError(client, "23514", () => record(client, "adjustment", "-12.01"));
      expect(adjustment.message).toBe("Insufficient budget: balance 12.00, this adjustment needs 12.01");
      expect(await ledgerState(client, owner.tenant_id!)).toEqual(before);
      // Exactly down to zero is fine.
      expect((await record(client, "lead_purchase", -12, leadId)).balance_after).toBe("0.00");

      // Managers can't allow negative balances; admins and owners can.
      await expectSqlError(client, "42501", () => client.query("select app_public.set_budget_allow_negative(true)"));
      await expectSqlError(client, "42501", () => client.query("update app_public.budget_accounts set allow_negative = true"));
      await becomeUser(client, admin);
      const { rows } = await client.query("select allow_negative from app_public.set_budget_allow_negative(true)");
      expect(rows[0].allow_negative).toBe(true);
      await becomeUser(client, manager);
      const negative = await record(client, "lead_purchase", -30, leadId);
      expect([negative.seq, negative.balance_after]).toEqual(["3", "-30.00"]);

      // It can't be turned off while the balance is negative.
      await becomeUser(client, owner);
      const off = await expectSqlError(client, "22023", () => client.query("select app_public.set_budget_allow_negative(false)"));
      expect(off.message).toMatch(/can't be turned off while the balance is negative \(-30\.00\)/);
      await record(client, "deposit", 30);
      await client.query("select app_public.set_budget_allow_negative(false)");
      await expectSqlError(client, "23514", () => record(client, "lead_purchase", -1));
    });
  });

  it("is append-only: no request grants, and a trigger refuses update, delete and truncate even by the owner", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      await becomeUser(client, owner);
      await record(client, "deposit", 40);
      await record(client, "adjustment", -10);
      for (const sql of [
        "update app_public.budget_transactions set description = 'changed'",
        "delete from app_public.budget_transactions",
        "update app_public.budget_accounts set balance = 1000",
        "delete from app_public.budget_accounts",
      ]) {
        await expectSqlError(client, "42501", () => client.query(sql));
      }

      await becomeRoot(client);
      await client.query(`set local role ${pg.escapeIdentifier(db.roles.owner)}`);
      const mine = `tenant_id = '${owner.tenant_id}'`;
      for (const sql of [
        `update app_public.budget_transactions set description = 'changed' where ${mine}`,
        `update app_public.budget_transactions set amount = 50, balance_after = 50 where ${mine} and seq = 1`,
        `delete from app_public.budget_transactions where ${mine} and seq = 2`,
        "truncate app_public.budget_transactions",
        // Deleting the account would cascade into its ledger: refused too.
        `delete from app_public.budget_accounts where ${mine}`,
      ]) {
        const error = await expectSqlError(client, "42501", () => client.query(sql));
        expect(error.message).toMatch(/Budget transactions can't be changed or deleted/);
      }
      // Even the owner can't append rows that don't follow the account (bypassing the function).
      await expectSqlError(client, "23514", () =>
        client.query("insert into app_public.budget_transactions (tenant_id, seq, transaction_type, amount, balance_after) values ($1, 3, 'deposit', 5, 35)", [owner.tenant_id]),
      );
      // A hand-edited account doesn't help either: the new row must also continue the previous balance_after.
      await client.query("savepoint tampered_account");
      await client.query("update app_public.budget_accounts set balance = 999, last_seq = 3 where tenant_id = $1", [owner.tenant_id]);
      await expectSqlError(client, "23514", () =>
        client.query("insert into app_public.budget_transactions (tenant_id, seq, transaction_type, amount, balance_after) values ($1, 3, 'deposit', 5, 999)", [owner.tenant_id]),
      );
      await client.query("rollback to savepoint tampered_account");
      // The owner-only function for the worker and routing follows the same rules.
      const { rows } = await client.query<Txn>(
        "select seq, balance_after from app_private.record_budget_transaction_for_tenant($1, 'lead_purchase', -30)",
        [owner.tenant_id],
      );
      expect(rows[0]).toEqual({ seq: "3", balance_after: "0.00" });
      await expectSqlError(client, "23514", () => client.query("select app_private.record_budget_transaction_for_tenant($1, 'lead_purchase', -1)", [owner.tenant_id]));
      await expectSqlError(client, "P0002", () => client.query("select app_private.record_budget_transaction_for_tenant(gen_random_uuid(), 'deposit', 1)"));

      // Deleting the tenant deletes its ledger.
      await becomeRoot(client);
      await client.query("delete from app_public.tenants where id = $1", [owner.tenant_id]);
      const { txns, account } = await ledgerState(client, owner.tenant_id!);
      expect(txns).toEqual([]);
      expect(account).toBeNull();
    });
  });

  it("the isolation fixture writes tenant B's account and transactions", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const leadId = await insertLead(client, owner.tenant_id!);
      await becomeUser(client, owner);
      await seedLedger(client, owner, leadId);
      await becomeRoot(client);
      const { txns, account } = await ledgerState(client, owner.tenant_id!);
      expect(txns.map((t) => [t.seq, t.amount, t.balance_after, t.lead_id])).toEqual([
        ["1", "100.00", "100.00", null],
        ["2", "-25.00", "75.00", leadId],
      ]);
      expect(account?.balance).toBe("75.00");
    });
  });

  it("20 parallel connections: the balance is exact, seq is 1..n without gaps, never negative, and refused purchases leave no row", async () => {
    // Committed data: every writer is a separate connection in its own committed transaction.
    let owner: RegisteredUser | null = null;
    let manager: RegisteredUser | null = null;
    const root = await rootPool().connect();
    try {
      owner = await registerUser(root, { businessName: "Ledger Concurrency Co" });
      manager = await addMember(root, owner.tenant_id!, "manager");
      const leadId = await insertLead(root, owner.tenant_id!);
      const tenantId = owner.tenant_id!;
      const session = manager;

      const WRITERS = 20;
      const OPS = 10;
      const pool = poolFor(db.authUrl, WRITERS);
      const plan = (w: number, k: number) => {
        const deposit = (w + k) % 2 === 0;
        const amount = deposit ? 10 + ((w * 7 + k * 3) % 40) + 0.25 : -(25 + ((w * 11 + k * 5) % 50)) - 0.5;
        return { type: deposit ? "deposit" : "lead_purchase", amount: amount.toFixed(2) };
      };
      const planned = Array.from({ length: WRITERS }, (_, w) => Array.from({ length: OPS }, (_, k) => plan(w, k))).flat();
      const depositsTotal = planned.filter((p) => p.type === "deposit").reduce((s, p) => s + cents(p.amount), 0);
      const purchasesTotal = planned.filter((p) => p.type !== "deposit").reduce((s, p) => s - cents(p.amount), 0);
      // More is asked for than is ever deposited, so some purchases must be refused.
      expect(purchasesTotal).toBeGreaterThan(depositsTotal);

      const clients = await Promise.all(Array.from({ length: WRITERS }, () => pool.connect()));
      let outcomes: Array<{ accepted: Txn[]; refused: number }>;
      try {
        outcomes = await Promise.all(
          clients.map(async (client, w) => {
            const accepted: Txn[] = [];
            let refused = 0;
            for (let k = 0; k < OPS; k++) {
              const { type, amount } = plan(w, k);
              await client.query("begin");
              try {
                await client.query(`set local role ${pg.escapeIdentifier(db.roles.visitor)}`);
                await client.query(
                  "select set_config('app.current_user_id', $1, true), set_config('app.current_tenant_id', $2, true), set_config('app.current_session_id', $3, true)",
                  [session.user_id, tenantId, session.session_id],
                );
                accepted.push(await record(client, type, amount, type === "deposit" ? null : leadId, `writer ${w} op ${k}`));
                await client.query("commit");
              } catch (error) {
                await client.query("rollback");
                const e = error as pg.DatabaseError;
                if (e.code === "23514" && /^Insufficient budget: balance \d+\.\d\d, this lead purchase needs \d+\.\d\d$/.test(e.message)) {
                  refused += 1;
                } else {
                  throw error;
                }
              }
            }
            return { accepted, refused };
          }),
        );
      } finally {
        for (const client of clients) client.release();
      }

      const accepted = outcomes.flatMap((o) => o.accepted);
      const refused = outcomes.reduce((s, o) => s + o.refused, 0);
      expect(accepted.length + refused).toBe(WRITERS * OPS);
      expect(refused).toBeGreaterThan(0);
      expect(accepted.filter((t) => t.transaction_type === "lead_purchase").length).toBeGreaterThan(0);

      const { txns, account } = await ledgerState(root, tenantId);
      // Refused purchases left nothing: one row per accepted call, and they are the same rows.
      expect(txns.length).toBe(accepted.length);
      const bySeq = new Map(accepted.map((t) => [t.seq, t]));
      expect(bySeq.size).toBe(accepted.length);
      // seq is exactly 1..n, and each balance_after is the previous one plus its amount, never negative.
      let running = 0;
      txns.forEach((t, i) => {
        expect(t.seq).toBe(String(i + 1));
        running += cents(t.amount);
        expect(cents(t.balance_after), `seq ${t.seq}`).toBe(running);
        expect(running, `seq ${t.seq}`).toBeGreaterThanOrEqual(0);
        expect(bySeq.get(t.seq)).toEqual(t);
      });
      const acceptedTotal = accepted.reduce((s, t) => s + cents(t.amount), 0);
      expect(cents(account!.balance)).toBe(acceptedTotal);
      expect(running).toBe(acceptedTotal);
      expect(account!.last_seq).toBe(String(accepted.length));
    } finally {
      try {
        await becomeRoot(root);
        if (owner) await root.query("delete from app_public.tenants where id = $1", [owner.tenant_id]);
        const users = [owner?.user_id, manager?.user_id].filter((id): id is string => Boolean(id));
        if (users.length) await root.query("delete from app_public.users where id = any($1::uuid[])", [users]);
      } finally {
        root.release();
      }
    }
  });
});
