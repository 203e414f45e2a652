--! Previous: sha1:e32bfb6affe7d74524bea8357cf799e7a8c469d4
--! Hash: sha1:ce416f9b900a1de86956cfceb8d7f1b3ce5700b8
--! Message: Issue 18: one check of event type names (app_hidden.unknown_event_types, null refused); the commit enqueues a paused endpoint's job for the end of its pause

-- Issue 18, from re-reading the change: the check of event type names was written twice (endpoint
-- filters, eventsAfter) and let a null name through; it is now one function. The commit no longer pulls a
-- paused endpoint’s job forward only for the claim to put it back.
--! Included platform/unknown_event_types.sql
create or replace function app_hidden.unknown_event_types(types text[]) returns text
  language sql stable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select pg_catalog.string_agg(coalesce(pg_catalog.quote_literal(t.name), 'null'), ', ' order by t.name)
  from pg_catalog.unnest(unknown_event_types.types) as t(name)
  where t.name is null or not exists (select 1 from app_public.event_types k where k.name = t.name);
$$;

comment on function app_hidden.unknown_event_types(text[]) is $$The names in types that are no event type of app_public.event_types (null counts as unknown), quoted and comma-separated for a message, or null when every name is known. The one check of webhook endpoint filters and of eventsAfter’s types.$$;
grant execute on function app_hidden.unknown_event_types(text[]) to :DATABASE_VISITOR;
--! EndIncluded platform/unknown_event_types.sql
--! Included platform/tg_webhook_endpoints__validate.sql
create or replace function app_private.tg_webhook_endpoints__validate() returns trigger
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_unknown text;
begin
  v_unknown := app_hidden.unknown_event_types(NEW.event_types);
  if v_unknown is not null then
    raise exception 'Unknown event type %: use the names of eventTypes (e.g. lead.created, message.received), or none for every type', v_unknown
      using errcode = '22023';
  end if;
  NEW.event_types := array(select distinct t.name from pg_catalog.unnest(NEW.event_types) as t(name) order by t.name);
  if TG_OP = 'UPDATE' and NEW.enabled and not OLD.enabled then
    -- Turned on again: it starts afresh; what waited is delivered.
    NEW.disabled_at := null;
    NEW.disabled_reason := null;
    NEW.failing_since := null;
    NEW.consecutive_failures := 0;
    NEW.paused_until := null;
  elsif TG_OP = 'UPDATE' and not NEW.enabled and OLD.enabled and NEW.disabled_at is null then
    NEW.disabled_at := app_hidden.clock_now(NEW.tenant_id);
    NEW.disabled_reason := coalesce(NEW.disabled_reason, 'turned off by a member');
  end if;
  return NEW;
end;
$$;

comment on function app_private.tg_webhook_endpoints__validate() is $$Trigger (_200_validate, before insert or update on webhook_endpoints): refuses event types that are not in app_public.event_types (22023, naming them) and keeps the list sorted without repeats; when an endpoint is turned on again, clears why it was turned off and since when it failed; when a member turns it off, records when.$$;
--! EndIncluded platform/tg_webhook_endpoints__validate.sql
--! Included platform/events_after.sql
create or replace function app_public.events_after(after_seq bigint default 0, max_count integer default 100, types text[] default null)
    returns setof app_public.events
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('admin', 'read the event feed');
  v_unknown text;
begin
  if events_after.after_seq is null or events_after.after_seq < 0 then
    raise exception 'afterSeq must be 0 (from the start) or the seq of the last event read' using errcode = '22023';
  end if;
  if events_after.max_count is null or events_after.max_count not between 1 and 1000 then
    raise exception 'maxCount must be 1 to 1000' using errcode = '22023';
  end if;
  if events_after.types is not null then
    if pg_catalog.cardinality(events_after.types) not between 1 and 50 then
      raise exception 'types must list 1 to 50 event types, or be left out for every type' using errcode = '22023';
    end if;
    v_unknown := app_hidden.unknown_event_types(events_after.types);
    if v_unknown is not null then
      raise exception 'Unknown event type %: use the names of eventTypes', v_unknown using errcode = '22023';
    end if;
    -- One index range per type, each cut at max_count: the work follows the page, not the feed.
    return query
    select p.* from (select distinct t.name from pg_catalog.unnest(events_after.types) t(name)) t
    cross join lateral (
      select e.* from app_public.events e
      where e.tenant_id = v_tenant_id and e.type = t.name and e.seq > events_after.after_seq
      order by e.seq
      limit events_after.max_count
    ) p
    order by p.seq
    limit events_after.max_count;
    return;
  end if;
  return query
  select e.* from app_public.events e
  where e.tenant_id = v_tenant_id and e.seq > events_after.after_seq
  order by e.seq
  limit events_after.max_count;
end;
$$;

comment on function app_public.events_after(bigint, integer, text[]) is $$The event feed, for clients that cannot receive webhooks: the business’s events numbered after afterSeq (0 for the beginning), oldest first, at most maxCount (1 to 1000, default 100), of the given types (default every type). The numbers (seq) have no gaps and are given in commit order, so a client that stores the last seq it read and asks for what comes after it misses nothing and sees nothing twice. Owners and admins (an API key with the admin role suits a poller). Errors: 42501 not allowed; 22023 afterSeq, maxCount or types invalid.$$;
grant execute on function app_public.events_after(bigint, integer, text[]) to :DATABASE_VISITOR;
--! EndIncluded platform/events_after.sql
--! Included platform/tg_events__number.sql
create or replace function app_private.tg_events__number() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_xact bigint := pg_catalog.pg_current_xact_id()::text::bigint;
  v_tenant uuid;
  v_tenants uuid[];
  v_count bigint;
  v_last bigint;
  v_now timestamptz;
  v_endpoints uuid[];
  v_endpoint uuid;
  v_paused_until timestamptz;
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
    v_now := app_hidden.clock_now(v_tenant);
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
    -- The endpoints are locked (key share) before their deliveries are written: an endpoint another
    -- transaction is deleting is waited for and left out once gone, so the delete cannot make this commit
    -- fail on the deliveries’ foreign key; schedule_webhook_endpoint waits for this commit in turn.
    with targets as (
      select w.id, w.tenant_id, w.event_types from app_public.webhook_endpoints w
      where w.tenant_id = v_tenant and w.enabled
      for key share
    ), delivered as (
      insert into app_public.webhook_deliveries (tenant_id, endpoint_id, event_id, event_seq, event_type, next_attempt_at)
      select v_tenant, w.id, e.id, e.seq, e.type, v_now
      from targets w
      join app_public.events e
        on e.tenant_id = w.tenant_id and e.seq > v_last - v_count and e.seq <= v_last
       and (w.event_types = '{}' or e.type = any (w.event_types))
      on conflict on constraint webhook_deliveries_event_must_be_delivered_once_per_endpoint do nothing
      returning endpoint_id
    )
    select pg_catalog.array_agg(distinct d.endpoint_id) into v_endpoints from delivered d;
    if v_endpoints is not null then
      foreach v_endpoint in array v_endpoints loop
        -- Now, or when the endpoint’s pause after failures ends (a paused endpoint is not run for nothing).
        select w.paused_until into v_paused_until from app_public.webhook_endpoints w where w.id = v_endpoint;
        perform app_private.add_job('webhook__deliver', pg_catalog.json_build_object('endpoint_id', v_endpoint),
          run_at => pg_catalog.now() + greatest(coalesce(v_paused_until, v_now) - v_now, interval '0'),
          job_key => 'webhook_endpoint:' || v_endpoint, job_key_mode => 'replace');
      end loop;
    end if;
  end loop;
  return null;
end;
$$;

comment on function app_private.tg_events__number() is $$Constraint trigger (_900_number, after insert on app_private.event_batches, deferrable initially deferred: it runs at the commit, once per business the transaction wrote events of): gives the transaction’s events their numbers in their tenant’s gap-free sequence (app_private.event_counters, locked until the commit, so numbers follow commit order and a cursor never skips one), in the order they were written; then writes a delivery for each event to each enabled webhook endpoint of the tenant that takes its type, and enqueues one webhook__deliver job per endpoint that got one (job key webhook_endpoint:<id>), to run now or when the endpoint’s pause after failures ends. A rolled-back transaction takes its numbers back with it.$$;
--! EndIncluded platform/tg_events__number.sql
