--! Previous: sha1:9a1e6b05e64c80223c79973a4191773438a83273
--! Hash: sha1:e32bfb6affe7d74524bea8357cf799e7a8c469d4
--! Message: Issue 18: from an adversarial review of events and webhooks: bulk lead updates plan their events per statement, claims read what they take, endpoint deletes and claims no longer race commits, failing endpoints pause, one replay at a time, resends after a turn-off, stricter URLs

-- Issue 18, from an adversarial review of the events and webhooks (000084–000086), each with a test seen
-- failing before: a bulk update of leads planned its events by nested loop (n²) on a pooled connection;
-- a claim read an endpoint’s whole due backlog; deleting an endpoint could make a concurrent write of
-- the business fail; a claim finding nothing could push back a job a concurrent commit had made due; a
-- dead receiver held worker slots for as long as deliveries were due (now: the endpoint pauses after
-- failures); replay could pile up sends without bound; turning a failed endpoint on again left what
-- had given up; URLs the sender cannot parse were accepted.

alter table app_public.webhook_endpoints add column if not exists consecutive_failures integer not null default 0;
alter table app_public.webhook_endpoints add column if not exists paused_until timestamptz;
comment on column app_public.webhook_endpoints.consecutive_failures is 'Failed attempts in a row (0 after a success).';
comment on column app_public.webhook_endpoints.paused_until is 'While failing: nothing is sent to it before this time (the retry delay, growing with each batch of failures in a row); null when healthy.';

drop index if exists app_public.webhook_deliveries_due;
create index if not exists webhook_deliveries_due_in_order on app_public.webhook_deliveries (endpoint_id, next_attempt_at, event_seq) where status = 'pending';

-- The transaction id as a bigint (the same number as xid8): PostGraphile has no codec for xid8 and warned
-- at every start, though the column is not exposed.
do $$
begin
  if (select a.atttypid from pg_catalog.pg_attribute a where a.attrelid = 'app_public.events'::regclass and a.attname = 'txid') = 'pg_catalog.xid8'::regtype then
    alter table app_public.events alter column txid drop default;
    alter table app_public.events alter column txid type bigint using txid::text::bigint;
    alter table app_private.event_batches alter column txid type bigint using txid::text::bigint;
  end if;
end;
$$;
alter table app_public.events alter column txid set default (pg_catalog.pg_current_xact_id()::text::bigint);
comment on column app_public.events.txid is 'The transaction that wrote it, pg_current_xact_id() as a number (internal: how the commit finds the events to number).';
comment on column app_private.event_batches.txid is 'The transaction, pg_current_xact_id() as a number.';
--! Included platform/tg_events__mark.sql
create or replace function app_private.tg_events__mark() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- One mark per transaction and business, however many events: the numbering at the commit runs once
  -- per mark, not once per event.
  insert into app_private.event_batches (txid, tenant_id)
  select distinct pg_catalog.pg_current_xact_id()::text::bigint, n.tenant_id from new_events n
  on conflict do nothing;
  return null;
end;
$$;

comment on function app_private.tg_events__mark() is $$Trigger (_900_mark, after insert on app_public.events, for each statement): marks that the transaction wrote events of these businesses (app_private.event_batches), so that their numbering runs once at the commit (the deferred trigger _900_number on event_batches).$$;
--! EndIncluded platform/tg_events__mark.sql

--! Included crm/tg_leads__events.sql
create or replace function app_private.tg_leads__events() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if TG_OP = 'INSERT' then
    insert into app_public.events (tenant_id, type, lead_id, data)
    select n.tenant_id, 'lead.created', n.id,
      pg_catalog.jsonb_build_object('id', n.id, 'first_name', n.first_name, 'last_name', n.last_name, 'phone', n.phone,
        'email', n.email, 'city', n.city, 'region', n.region, 'postal_code', n.postal_code, 'country', n.country,
        'source', n.source, 'status', n.status, 'tags', n.tags, 'attributes', n.attributes, 'created_at', n.created_at)
    from new_leads n;
    return null;
  end if;
  -- Planned for each statement (EXECUTE): a query without parameters keeps the plan of its first run,
  -- and one made when the transition tables held one row joins new and old rows by nested loop, n² for
  -- an update of many leads.
  execute $sql$
  insert into app_public.events (tenant_id, type, lead_id, data)
  select n.tenant_id, 'lead.status_changed', n.id, pg_catalog.jsonb_build_object('id', n.id, 'from', o.status, 'to', n.status)
  from new_leads n join old_leads o on o.id = n.id
  where n.status is distinct from o.status
  union all
  select n.tenant_id, 'lead.updated', n.id, pg_catalog.jsonb_build_object('id', n.id, 'changes', c.changes)
  from new_leads n join old_leads o on o.id = n.id
  cross join lateral (
    select pg_catalog.jsonb_object_agg(k.key, k.value) as changes
    from pg_catalog.jsonb_each(pg_catalog.to_jsonb(n)) k
    where k.key <> all (array['id', 'tenant_id', 'created_at', 'updated_at', 'full_name', 'status', 'owner_user_id', 'owner_agent_id',
                              'lead_score_factors', 'ai_analysis'])
      and k.value is distinct from pg_catalog.to_jsonb(o) -> k.key
  ) c
  where c.changes is not null
  $sql$;
  return null;
end;
$$;

comment on function app_private.tg_leads__events() is $$Trigger (_950_events_on_insert and _950_events_on_update, after insert or update on leads, for each statement): writes the events lead.created (the lead’s contact fields, source, status, tags and attributes), lead.status_changed (from, to) and lead.updated (the fields that changed with their new values, except status and the owner, which have their own events, and derived fields) for the rows of the statement, in one insert, planned for each statement’s own row counts (dynamic SQL).$$;
--! EndIncluded crm/tg_leads__events.sql
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
    -- The endpoints are locked (key share) before their deliveries are written: an endpoint another
    -- transaction is deleting is waited for and left out once gone, so the delete cannot make this commit
    -- fail on the deliveries’ foreign key; schedule_webhook_endpoint waits for this commit in turn.
    with targets as (
      select w.id, w.tenant_id, w.event_types from app_public.webhook_endpoints w
      where w.tenant_id = v_tenant and w.enabled
      for key share
    ), delivered as (
      insert into app_public.webhook_deliveries (tenant_id, endpoint_id, event_id, event_seq, event_type, next_attempt_at)
      select v_tenant, w.id, e.id, e.seq, e.type, app_hidden.clock_now(v_tenant)
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
--! Included platform/schedule_webhook_endpoint.sql
create or replace function app_private.schedule_webhook_endpoint(endpoint_id uuid) returns timestamptz
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant uuid;
  v_paused_until timestamptz;
  v_next timestamptz;
begin
  -- The row lock waits for a commit that is fanning out to this endpoint (it holds a key share lock), so
  -- the deliveries it makes due are seen below and their job is not pushed back.
  select w.tenant_id, w.paused_until into v_tenant, v_paused_until from app_public.webhook_endpoints w
  where w.id = schedule_webhook_endpoint.endpoint_id and w.enabled
  for update;
  if v_tenant is null then
    return null;
  end if;
  select pg_catalog.min(d.next_attempt_at) into v_next from app_public.webhook_deliveries d
  where d.endpoint_id = schedule_webhook_endpoint.endpoint_id and d.status = 'pending'
    and (d.lease_until is null or d.lease_until < pg_catalog.clock_timestamp());
  if v_next is null then
    return null;
  end if;
  v_next := greatest(v_next, v_paused_until);
  -- next_attempt_at is on the tenant’s clock; the job runs on the real one.
  perform app_private.add_job('webhook__deliver', pg_catalog.json_build_object('endpoint_id', schedule_webhook_endpoint.endpoint_id),
    run_at => pg_catalog.now() + greatest(v_next - app_hidden.clock_now(v_tenant), interval '0'),
    job_key => 'webhook_endpoint:' || schedule_webhook_endpoint.endpoint_id, job_key_mode => 'replace');
  return v_next;
end;
$$;

comment on function app_private.schedule_webhook_endpoint(uuid) is $$Enqueues the webhook__deliver job of an enabled endpoint (job key webhook_endpoint:<id>) for its earliest pending delivery not being sent now (not before the end of the endpoint’s pause after failures), and returns that time (on the tenant’s clock), or null when nothing waits or the endpoint is off. Locks the endpoint’s row first, so a commit fanning out to it is waited for and its deliveries counted.$$;
--! EndIncluded platform/schedule_webhook_endpoint.sql
--! Included platform/claim_webhook_deliveries.sql
create or replace function app_private.claim_webhook_deliveries(endpoint_id uuid, max_count integer, lease_seconds integer)
    returns table (delivery_id uuid, event_id uuid, url text, secrets text[], payload text, attempt integer)
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_endpoint app_public.webhook_endpoints;
  v_now timestamptz;
  v_secrets text[];
begin
  select w.* into v_endpoint from app_public.webhook_endpoints w where w.id = claim_webhook_deliveries.endpoint_id;
  if not found or not v_endpoint.enabled then
    return;
  end if;
  v_now := app_hidden.clock_now(v_endpoint.tenant_id);
  if v_endpoint.paused_until > v_now then
    -- The endpoint is failing: nothing goes until its pause ends (the job comes back then).
    perform app_private.schedule_webhook_endpoint(v_endpoint.id);
    return;
  end if;
  select pg_catalog.array_agg(s.secret order by s.created_at desc) into v_secrets
  from app_private.webhook_secrets s
  where s.endpoint_id = v_endpoint.id and (s.expires_at is null or s.expires_at > pg_catalog.clock_timestamp());
  return query
  with due as (
    select d.id from app_public.webhook_deliveries d
    where d.endpoint_id = v_endpoint.id and d.status = 'pending' and d.next_attempt_at <= v_now
      and (d.lease_until is null or d.lease_until < pg_catalog.clock_timestamp())
    order by d.next_attempt_at, d.event_seq
    limit least(greatest(claim_webhook_deliveries.max_count, 1), 1000)
    for update skip locked
  ), claimed as (
    update app_public.webhook_deliveries d
    set lease_until = pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => greatest(claim_webhook_deliveries.lease_seconds, 1)),
        attempts = d.attempts + 1
    from due where d.id = due.id
    returning d.id, d.event_id, d.attempts
  )
  select c.id, c.event_id, v_endpoint.url, v_secrets,
    pg_catalog.jsonb_build_object('id', e.id, 'type', e.type, 'sequence', e.seq,
      'timestamp', pg_catalog.to_char(e.occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
      'data', e.data)::text,
    c.attempts
  from claimed c
  join app_public.events e on e.tenant_id = v_endpoint.tenant_id and e.id = c.event_id
  order by e.seq;
  if not found then
    -- Nothing due: the endpoint’s job comes back for the earliest retry, if any.
    perform app_private.schedule_webhook_endpoint(v_endpoint.id);
  end if;
end;
$$;

comment on function app_private.claim_webhook_deliveries(uuid, integer, integer) is $$For the webhook__deliver task: takes up to max_count (at most 1000) deliveries of an enabled endpoint that are due (on the tenant’s clock) and not being sent, longest due first (then oldest event), read through the index webhook_deliveries_due_in_order so a claim reads about what it takes, leases them for lease_seconds (a worker that dies holding them loses them to the next run after that) and counts the attempt; returns each with the URL, the endpoint’s current secrets (newest first, for the signatures) and the body to POST: {"id", "type", "sequence", "timestamp", "data"}. When nothing is due, or the endpoint is paused after failures (paused_until), it enqueues the endpoint’s job for when something is and returns no rows.$$;
--! EndIncluded platform/claim_webhook_deliveries.sql
--! Included platform/record_webhook_attempt.sql
create or replace function app_private.record_webhook_attempt(delivery_id uuid, status_code integer, error text, duration_ms integer, response_body text)
    returns text
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_delivery app_public.webhook_deliveries;
  v_endpoint app_public.webhook_endpoints;
  v_now timestamptz;
  v_ok boolean := coalesce(record_webhook_attempt.status_code between 200 and 299, false);
  v_owner record;
  v_what text;
begin
  select d.* into v_delivery from app_public.webhook_deliveries d where d.id = record_webhook_attempt.delivery_id for update;
  if not found then
    return 'gone';
  end if;
  if v_delivery.status <> 'pending' then
    return v_delivery.status;
  end if;
  v_now := app_hidden.clock_now(v_delivery.tenant_id);
  insert into app_public.webhook_delivery_attempts (tenant_id, delivery_id, endpoint_id, attempt, attempted_at, status_code, error, duration_ms, response_body)
  values (v_delivery.tenant_id, v_delivery.id, v_delivery.endpoint_id, v_delivery.attempts, v_now, record_webhook_attempt.status_code,
          pg_catalog.left(record_webhook_attempt.error, 500), greatest(record_webhook_attempt.duration_ms, 0),
          pg_catalog.left(record_webhook_attempt.response_body, 1000));

  if v_ok then
    update app_public.webhook_deliveries d
    set status = 'delivered', delivered_at = v_now, lease_until = null, last_attempt_at = v_now, last_status_code = record_webhook_attempt.status_code
    where d.id = v_delivery.id;
    update app_public.webhook_endpoints w set failing_since = null, consecutive_failures = 0, paused_until = null
    where w.id = v_delivery.endpoint_id and (w.failing_since is not null or w.consecutive_failures <> 0);
    return 'delivered';
  end if;

  update app_public.webhook_deliveries d
  set status = case when d.attempts >= 20 then 'failed' else 'pending' end,
      next_attempt_at = v_now + app_hidden.webhook_retry_delay(d.attempts),
      lease_until = null, last_attempt_at = v_now, last_status_code = record_webhook_attempt.status_code
  where d.id = v_delivery.id
  returning * into v_delivery;
  -- The endpoint pauses too, growing with its failures in a row (a batch counts once): a dead receiver
  -- costs one batch per pause, not a worker slot for as long as deliveries are due.
  update app_public.webhook_endpoints w
  set failing_since = coalesce(w.failing_since, v_now),
      consecutive_failures = w.consecutive_failures + 1,
      paused_until = greatest(w.paused_until,
        v_now + app_hidden.webhook_retry_delay(1 + (w.consecutive_failures / 8)))
  where w.id = v_delivery.endpoint_id
  returning * into v_endpoint;

  if v_endpoint.enabled and v_now - v_endpoint.failing_since >= pg_catalog.make_interval(secs => v_endpoint.disable_after_seconds) then
    v_what := coalesce('HTTP ' || record_webhook_attempt.status_code, pg_catalog.left(record_webhook_attempt.error, 200), 'no answer');
    update app_public.webhook_endpoints w
    set enabled = false, disabled_at = v_now,
        disabled_reason = pg_catalog.format('failing since %s (last answer: %s)', pg_catalog.to_char(v_endpoint.failing_since at time zone 'UTC', 'YYYY-MM-DD HH24:MI "UTC"'), v_what)
    where w.id = v_endpoint.id;
    -- The owners are told, in the app and by email.
    for v_owner in
      select u.id, u.email from app_public.memberships m join app_public.users u on u.id = m.user_id
      where m.tenant_id = v_endpoint.tenant_id and m.role = 'owner'
    loop
      insert into app_public.notifications (tenant_id, user_id, kind, title, body)
      values (v_endpoint.tenant_id, v_owner.id, 'webhook_endpoint_disabled', 'A webhook endpoint was turned off',
        pg_catalog.format('Deliveries to %s failed for longer than %s seconds (last answer: %s), so it was turned off. Events are kept: turn it on again (updateWebhookEndpoint, enabled: true) to deliver what waits, and replayWebhookEvents for what came while it was off.',
          v_endpoint.url, v_endpoint.disable_after_seconds, v_what));
      if v_owner.email is not null then
        begin
          perform app_private.queue_email(v_endpoint.tenant_id, v_owner.email::text, 'A webhook endpoint was turned off',
            pg_catalog.format(E'Deliveries to %s failed for longer than %s seconds (last answer: %s), so Switchboard turned the endpoint off.\n\nEvents are kept. Turn it on again to deliver what waits, and replay what came while it was off.\n',
              v_endpoint.url, v_endpoint.disable_after_seconds, v_what),
            'transactional', user_id => v_owner.id, idempotency_key => 'webhook_disabled:' || v_endpoint.id || ':' || v_now);
        exception when sqlstate 'SB001' then
          null; -- a suppressed address: the notification in the app remains
        end;
      end if;
    end loop;
    return 'disabled';
  end if;
  return case when v_delivery.status = 'failed' then 'failed' else 'retry' end;
end;
$$;

comment on function app_private.record_webhook_attempt(uuid, integer, text, integer, text) is $$For the webhook__deliver task: records one attempt of a delivery (HTTP status or the error, its duration, the start of the answer) in webhook_delivery_attempts. A 2xx answer delivers it and ends the endpoint’s failing streak. Anything else retries it after app_hidden.webhook_retry_delay (on the tenant’s clock), gives it up after 20 attempts (failed), starts the endpoint’s failing streak and pauses the endpoint (paused_until: the same delay, counted in batches of eight failures in a row); an endpoint failing for longer than its disable_after_seconds is turned off and its owners are told (a notification and an email). Returns delivered, retry, failed, disabled, or the delivery’s status when it was no longer pending (gone when it was deleted with its endpoint).$$;
--! EndIncluded platform/record_webhook_attempt.sql
--! Included platform/replay_webhook_events.sql
create or replace function app_public.replay_webhook_events(endpoint_id uuid, after_seq bigint, max_count integer default 1000) returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('admin', 'redeliver webhooks');
  v_endpoint app_public.webhook_endpoints;
  v_count integer;
begin
  if replay_webhook_events.max_count is null or replay_webhook_events.max_count not between 1 and 10000 then
    raise exception 'maxCount must be 1 to 10000' using errcode = '22023';
  end if;
  if replay_webhook_events.after_seq is null or replay_webhook_events.after_seq < 0 then
    raise exception 'afterSeq must be 0 or a number of an event' using errcode = '22023';
  end if;
  select w.* into v_endpoint from app_public.webhook_endpoints w
  where w.id = replay_webhook_events.endpoint_id and w.tenant_id = v_tenant_id;
  if not found then
    raise exception 'No webhook endpoint %', replay_webhook_events.endpoint_id using errcode = 'P0002';
  end if;
  if not v_endpoint.enabled then
    raise exception 'The webhook endpoint is turned off: turn it on (updateWebhookEndpoint, enabled: true) to deliver' using errcode = '55000';
  end if;
  -- One replay at a time: while more than 1000 deliveries wait, another replay is refused, so a caller
  -- cannot pile up sends to one URL faster than it takes them.
  if (select pg_catalog.count(*) from (select 1 from app_public.webhook_deliveries d
        where d.endpoint_id = v_endpoint.id and d.status = 'pending' limit 1001) p) > 1000 then
    raise exception 'More than 1000 deliveries to this endpoint are still waiting: replay again once they are sent' using errcode = '55000';
  end if;
  with chosen as (
    select e.id, e.seq, e.type from app_public.events e
    where e.tenant_id = v_tenant_id and e.seq > replay_webhook_events.after_seq
      and (v_endpoint.event_types = '{}' or e.type = any (v_endpoint.event_types))
    order by e.seq
    limit replay_webhook_events.max_count
  ), written as (
    insert into app_public.webhook_deliveries as d (tenant_id, endpoint_id, event_id, event_seq, event_type, next_attempt_at)
    select v_tenant_id, v_endpoint.id, c.id, c.seq, c.type, app_hidden.clock_now(v_tenant_id) from chosen c
    on conflict on constraint webhook_deliveries_event_must_be_delivered_once_per_endpoint do update
      set status = 'pending', attempts = 0, next_attempt_at = excluded.next_attempt_at, delivered_at = null
      where d.status <> 'pending'
    returning 1
  )
  select pg_catalog.count(*) into v_count from written;
  perform app_private.schedule_webhook_endpoint(v_endpoint.id);
  return v_count;
end;
$$;

comment on function app_public.replay_webhook_events(uuid, bigint, integer) is $$Sends a webhook endpoint the business’s events after number afterSeq again (at most maxCount, 1 to 10000, default 1000, oldest first), those of the types it takes: for instance what happened while it was turned off. Each keeps its webhook-id. Returns how many deliveries were queued (those already waiting are left as they are). Owners and admins. Errors: 42501 not allowed; P0002 no such endpoint in this business; 55000 the endpoint is turned off, or more than 1000 of its deliveries are still waiting (one replay at a time); 22023 maxCount or afterSeq out of range.$$;
grant execute on function app_public.replay_webhook_events(uuid, bigint, integer) to :DATABASE_VISITOR;
--! EndIncluded platform/replay_webhook_events.sql
--! Included platform/tg_webhook_endpoints__validate.sql
create or replace function app_private.tg_webhook_endpoints__validate() returns trigger
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_unknown text;
begin
  select pg_catalog.string_agg(pg_catalog.quote_literal(t.name), ', ' order by t.name) into v_unknown
  from pg_catalog.unnest(NEW.event_types) as t(name)
  where not exists (select 1 from app_public.event_types k where k.name = t.name);
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
--! Included platform/tg_webhook_endpoints__resume.sql
create or replace function app_private.tg_webhook_endpoints__resume() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- What waited for a retry goes now, not at the end of a backoff grown while the endpoint was down.
  update app_public.webhook_deliveries d set next_attempt_at = app_hidden.clock_now(NEW.tenant_id)
  where d.endpoint_id = NEW.id and d.status = 'pending' and d.next_attempt_at > app_hidden.clock_now(NEW.tenant_id);
  -- And what gave up during the failing streak that turned it off (a delivery gives up after about two
  -- days, the endpoint is turned off after disable_after_seconds, five days by default) goes again.
  if OLD.failing_since is not null then
    update app_public.webhook_deliveries d
    set status = 'pending', attempts = 0, next_attempt_at = app_hidden.clock_now(NEW.tenant_id)
    where d.endpoint_id = NEW.id and d.status = 'failed' and d.last_attempt_at >= OLD.failing_since;
  end if;
  perform app_private.schedule_webhook_endpoint(NEW.id);
  return null;
end;
$$;

comment on function app_private.tg_webhook_endpoints__resume() is $$Trigger (_900_resume, after an endpoint is turned on again): its pending deliveries become due at once, those that gave up during the failing streak that turned it off are sent again, and its webhook__deliver job is enqueued.$$;
--! EndIncluded platform/tg_webhook_endpoints__resume.sql
--! Included platform/webhook_url_problem.sql
create or replace function app_hidden.webhook_url_problem(url text) returns text
  language sql immutable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select case
    when webhook_url_problem.url is null or pg_catalog.btrim(webhook_url_problem.url) = '' then 'a URL is required'
    when pg_catalog.length(webhook_url_problem.url) > 2000 then 'the URL must be at most 2000 characters'
    when webhook_url_problem.url !~* '^https?://' then 'the URL must start with https:// (or http://)'
    when webhook_url_problem.url ~ '[[:space:][:cntrl:]]' then 'the URL must not contain spaces or control characters'
    when webhook_url_problem.url ~ '#' then 'the URL must not have a fragment (#…)'
    when webhook_url_problem.url ~* '^https?://[^/?]*@' then 'the URL must not carry a user name or password'
    when webhook_url_problem.url !~* '^https?://([a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:.]+\])(:[0-9]{1,5})?([/?].*)?$'
      then 'the URL must name a host (letters, digits, hyphens and dots, or an address in brackets), with an optional port'
    when (pg_catalog.regexp_match(webhook_url_problem.url, '^https?://[^/?]*:([0-9]{1,5})([/?]|$)', 'i'))[1]::integer not between 1 and 65535
      then 'the port must be 1 to 65535'
    -- A host whose last label is a number is an IPv4 address to a URL parser: it must be a valid one.
    when (pg_catalog.regexp_match(webhook_url_problem.url, '^https?://([^/?:\[]*)', 'i'))[1] ~* '(^|\.)(0x[0-9a-f]*|[0-9]+)\.?$'
     and (pg_catalog.regexp_match(webhook_url_problem.url, '^https?://([^/?:\[]*)', 'i'))[1]
         !~ '^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$'
      then 'a host ending in a number must be an IPv4 address written as four numbers 0 to 255'
  end;
$$;

comment on function app_hidden.webhook_url_problem(text) is $$What is wrong with a webhook endpoint’s URL, in words, or null: it must be an http(s) URL of at most 2000 characters with a host name (or a bracketed address; a host ending in a number must be a dotted IPv4 address) and an optional port (1 to 65535), without spaces, a fragment, a user name or a password. Where the name points is checked when delivering: private, loopback and link-local addresses are refused unless the deployment allows them (WEBHOOK_ALLOW_PRIVATE_TARGETS).$$;
grant execute on function app_hidden.webhook_url_problem(text) to :DATABASE_VISITOR;
--! EndIncluded platform/webhook_url_problem.sql
