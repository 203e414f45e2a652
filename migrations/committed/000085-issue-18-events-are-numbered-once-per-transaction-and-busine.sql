--! Previous: sha1:f4e2c8496155bcaa6d654cfedabfdbc6f49f85bd
--! Hash: sha1:25d74929d91dc83eed18aa7b143e4f483238aea6
--! Message: Issue 18: events are numbered once per transaction and business at the commit (a mark in app_private.event_batches), not once per event

-- Issue 18: the numbering of events runs once per transaction and business at the commit, not once per
-- event. A statement writing events marks its transaction (app_private.event_batches); the deferred
-- trigger is on the mark. A 1,000-lead insert spent about 100 ms on the per-event calls.

create unlogged table if not exists app_private.event_batches (
  txid xid8 not null,
  tenant_id uuid not null,
  constraint event_batches_pkey primary key (txid, tenant_id)
);
comment on table app_private.event_batches is 'The businesses whose events a transaction wrote and that are not numbered yet: one row per transaction and business, deleted when the numbering runs at the commit (so the table only ever holds transactions in flight; unlogged, since a crash ends them all).';
comment on column app_private.event_batches.txid is 'The transaction (pg_current_xact_id).';
comment on column app_private.event_batches.tenant_id is 'The business it wrote events of.';
alter table app_private.event_batches enable row level security;
alter table app_private.event_batches force row level security;
drop policy if exists owner_all on app_private.event_batches;
create policy owner_all on app_private.event_batches for all to :DATABASE_OWNER using (true) with check (true);

--! Included platform/tg_events__mark.sql
create or replace function app_private.tg_events__mark() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- One mark per transaction and business, however many events: the numbering at the commit runs once
  -- per mark, not once per event.
  insert into app_private.event_batches (txid, tenant_id)
  select distinct pg_catalog.pg_current_xact_id(), n.tenant_id from new_events n
  on conflict do nothing;
  return null;
end;
$$;

comment on function app_private.tg_events__mark() is $$Trigger (_900_mark, after insert on app_public.events, for each statement): marks that the transaction wrote events of these businesses (app_private.event_batches), so that their numbering runs once at the commit (the deferred trigger _900_number on event_batches).$$;
--! EndIncluded platform/tg_events__mark.sql
--! Included platform/tg_events__number.sql
create or replace function app_private.tg_events__number() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_xact xid8 := pg_catalog.pg_current_xact_id();
  v_tenant uuid;
  v_tenants uuid[];
  v_count bigint;
  v_last bigint;
  v_endpoints uuid[];
  v_endpoint uuid;
begin
  -- Deferred to the commit: the first mark of the transaction to get here numbers the events of every
  -- business the transaction wrote to (the others find their mark gone). Each business’s counter row
  -- stays locked from here to the commit, so its numbers are given in commit order and a reader never
  -- sees a later number before an earlier one commits: a cursor skips nothing. Businesses in id order,
  -- so two transactions writing events of the same two businesses cannot deadlock.
  with gone as (
    delete from app_private.event_batches b where b.txid = v_xact returning b.tenant_id
  )
  select pg_catalog.array_agg(g.tenant_id order by g.tenant_id) into v_tenants from gone g;
  if v_tenants is null then
    return null;
  end if;
  foreach v_tenant in array v_tenants loop
    select pg_catalog.count(*) into v_count from app_public.events e
    where e.txid = v_xact and e.seq is null and e.tenant_id = v_tenant;
    insert into app_private.event_counters as c (tenant_id, last_seq) values (v_tenant, v_count)
      on conflict (tenant_id) do update set last_seq = c.last_seq + excluded.last_seq
      returning c.last_seq into v_last;
    update app_public.events e set seq = v_last - v_count + n.rn
    from (
      select e2.id, pg_catalog.row_number() over (order by e2.position) as rn
      from app_public.events e2
      where e2.txid = v_xact and e2.seq is null and e2.tenant_id = v_tenant
    ) n
    where e.tenant_id = v_tenant and e.id = n.id;

    -- Fan-out: one delivery per event and enabled endpoint that takes its type, due now; one job per endpoint.
    with delivered as (
      insert into app_public.webhook_deliveries (tenant_id, endpoint_id, event_id, event_seq, event_type, next_attempt_at)
      select v_tenant, w.id, e.id, e.seq, e.type, app_hidden.clock_now(v_tenant)
      from app_public.webhook_endpoints w
      join app_public.events e
        on e.tenant_id = w.tenant_id and e.seq > v_last - v_count and e.seq <= v_last
       and (w.event_types = '{}' or e.type = any (w.event_types))
      where w.tenant_id = v_tenant and w.enabled
      on conflict on constraint webhook_deliveries_event_must_be_delivered_once_per_endpoint do nothing
      returning endpoint_id
    )
    select pg_catalog.array_agg(distinct d.endpoint_id) into v_endpoints from delivered d;
    if v_endpoints is not null then
      foreach v_endpoint in array v_endpoints loop
        perform app_private.add_job('webhook__deliver', pg_catalog.json_build_object('endpoint_id', v_endpoint),
          job_key => 'webhook_endpoint:' || v_endpoint, job_key_mode => 'replace');
      end loop;
    end if;
  end loop;
  return null;
end;
$$;

comment on function app_private.tg_events__number() is $$Constraint trigger (_900_number, after insert on app_private.event_batches, deferrable initially deferred: it runs at the commit, once per business the transaction wrote events of): gives the transaction’s events their numbers in their tenant’s gap-free sequence (app_private.event_counters, locked until the commit, so numbers follow commit order and a cursor never skips one), in the order they were written; then writes a delivery for each event to each enabled webhook endpoint of the tenant that takes its type, and enqueues one webhook__deliver job per endpoint that got one (job key webhook_endpoint:<id>). A rolled-back transaction takes its numbers back with it.$$;
--! EndIncluded platform/tg_events__number.sql

drop trigger if exists _900_number on app_public.events;
drop trigger if exists _900_mark on app_public.events;
create trigger _900_mark after insert on app_public.events referencing new table as new_events
  for each statement execute function app_private.tg_events__mark();
drop trigger if exists _900_number on app_private.event_batches;
create constraint trigger _900_number after insert on app_private.event_batches deferrable initially deferred
  for each row execute function app_private.tg_events__number();
