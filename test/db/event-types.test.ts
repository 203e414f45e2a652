/**
 * Every event type has a writer (issue 18): the changes of a whole business — the isolation fixture's
 * rows of every area, then the changes of state the fixture does not make — write an event of every
 * type in app_public.event_types. Generated from the catalog: a new type without a trigger fails here.
 */
import { describe, expect, it } from "vitest";
import { seedAnalysis } from "../fixtures/analysis.ts";
import { seedEmail } from "../fixtures/email.ts";
import { seedForms } from "../fixtures/forms.ts";
import { seedHistory } from "../fixtures/history.ts";
import { seedImport } from "../fixtures/import.ts";
import { seedLedger } from "../fixtures/ledger.ts";
import { seedNurture } from "../fixtures/nurture.ts";
import { seedRouting } from "../fixtures/routing.ts";
import { seedTelephony } from "../fixtures/telephony.ts";
import { becomeRoot, becomeUser, registerUser, withRootDb } from "../helpers.ts";

describe("event types", () => {
  it("every type in app_public.event_types is written by the change it names", async () => {
    await withRootDb(async (client) => {
      await client.query("set constraints app_private._900_number immediate");
      const owner = await registerUser(client);
      await becomeUser(client, owner);
      const { rows: [lead] } = await client.query<{ id: string }>("insert into app_public.leads (first_name, phone, source) values ('Every', '+12025550111', 'test') returning id");
      for (const seed of [seedHistory, seedAnalysis, seedLedger, seedImport, seedRouting, seedTelephony, seedEmail, seedNurture, seedForms]) {
        await seed(client, owner, lead!.id);
        await becomeUser(client, owner);
      }
      await becomeRoot(client);
      const t = owner.tenant_id;
      // The changes of state the fixture does not make, each as its own code path would.
      await client.query("update app_public.leads set status = 'contacted', city = 'Dover' where id = $1", [lead!.id]);
      const { rows: [agent] } = await client.query<{ id: string }>("select id from app_public.agents where tenant_id = $1 limit 1", [t]);
      await client.query("update app_public.routing_offers set status = 'cancelled' where tenant_id = $1 and status = 'pending'", [t]);
      for (const outcome of ["accepted", "rejected", "expired", "cancelled"]) {
        const { rows: [offer] } = await client.query<{ id: string }>(
          "insert into app_public.routing_offers (tenant_id, lead_id, agent_id, expires_at) values ($1, $2, $3, now() + interval '5 minutes') returning id",
          [t, lead!.id, agent!.id],
        );
        await client.query("update app_public.routing_offers set status = $2, responded_at = now() where id = $1", [offer!.id, outcome]);
      }
      // Two texts as the outbox writes them (the guard is not the subject here), then their provider's reports.
      await client.query("set local session_replication_role = replica");
      const { rows: texts } = await client.query<{ id: string }>(
        `insert into app_public.messages (tenant_id, lead_id, direction, sender, purpose, from_phone, to_phone, body, status, sending_at)
         select $1, $2, 'outbound', 'human', 'conversation', '+12025550199', '+12025550111', 'On our way', 'sending', now() from generate_series(1, 2) returning id`,
        [t, lead!.id],
      );
      await client.query("set local session_replication_role = origin");
      await client.query("update app_public.messages set status = 'sent', sent_at = now() where id = any($1)", [texts.map((x) => x.id)]);
      await client.query("update app_public.messages set status = 'delivered', delivered_at = now() where id = $1", [texts[0]!.id]);
      await client.query("update app_public.messages set status = 'undelivered', failed_at = now(), error_code = 30003 where id = $1", [texts[1]!.id]);
      await client.query(
        "update app_public.lead_sequence_enrollments set status = 'stopped', stopped_at = now(), stop_reason = 'unenrolled', next_step_number = null, next_step_at = null where tenant_id = $1 and status <> 'stopped'",
        [t],
      );
      const { rows } = await client.query<{ name: string }>(
        "select k.name from app_public.event_types k where not exists (select 1 from app_public.events e where e.tenant_id = $1 and e.type = k.name) order by 1",
        [owner.tenant_id],
      );
      expect(rows.map((r) => r.name).join(", ")).toBe("");
    });
  });
});
