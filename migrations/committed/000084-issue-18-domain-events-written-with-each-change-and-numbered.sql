--! Previous: sha1:6a9f93436899cb8dade29dc6b7001cf98fb2d03e
--! Hash: sha1:f4e2c8496155bcaa6d654cfedabfdbc6f49f85bd
--! Message: Issue 18: domain events written with each change and numbered without gaps per business at the commit; webhook endpoints with event filters, Standard Webhooks signatures, retries with backoff, a delivery log, redelivery, replay, secret rotation and automatic turn-off; the event feed (events_after)

-- Issue 18, part 2: tell other systems. Every domain change writes an event in its own transaction to an
-- append-only log per business, numbered without gaps at the commit; webhook endpoints receive the
-- events of the types they take, signed per Standard Webhooks, at least once, with retries; clients
-- that cannot receive webhooks read the log after a cursor (events_after).

-- The kinds of events, with what their data holds: the reference for endpoint filters and receivers.
create table if not exists app_public.event_types (
  name text primary key,
  description text not null,
  constraint event_types_name_must_be_area_dot_action check (name ~ '^[a-z_]+\.[a-z_]+\Z')
);
comment on table app_public.event_types is $$@behavior -insert -update -delete
The kinds of domain events Switchboard writes (app_public.events) and sends to webhook endpoints, with what each event’s data holds. The same for every business.$$;
comment on column app_public.event_types.name is 'The type, area.action (lead.created, message.received, …): what webhook endpoints filter on and what the webhook body’s type says.';
comment on column app_public.event_types.description is 'When it is written and what its data holds.';
alter table app_public.event_types enable row level security;
alter table app_public.event_types force row level security;
drop policy if exists owner_all on app_public.event_types;
create policy owner_all on app_public.event_types for all to :DATABASE_OWNER using (true) with check (true);
drop policy if exists select_all on app_public.event_types;
create policy select_all on app_public.event_types for select to :DATABASE_VISITOR using (true);
grant select on app_public.event_types to :DATABASE_VISITOR;

insert into app_public.event_types (name, description) values
  ('lead.created', 'A lead was created (form, import, call, text, API). Data: id, first_name, last_name, phone, email, city, region, postal_code, country, source, status, tags, attributes, created_at.'),
  ('lead.updated', 'Fields of a lead changed. Data: id, changes (each changed field with its new value; status and owner have their own events).'),
  ('lead.status_changed', 'A lead’s status changed. Data: id, from, to.'),
  ('lead.assigned', 'A lead got a new owner (or lost it). Data: id (of the assignment), lead_id, from_agent_id, to_agent_id, from_user_id, to_user_id, strategy, reason, assigned_at.'),
  ('lead.queued', 'A lead waits in a routing queue for an agent. Data: id (of the queue entry), lead_id, queue_type, priority, sla_expires_at.'),
  ('offer.created', 'A lead was offered to an agent. Data: id, lead_id, agent_id, expires_at.'),
  ('offer.accepted', 'An agent accepted an offer. Data: id, lead_id, agent_id, responded_at.'),
  ('offer.rejected', 'An agent rejected an offer. Data: id, lead_id, agent_id, responded_at, decline_reason.'),
  ('offer.expired', 'An offer ran out before the agent answered. Data: id, lead_id, agent_id, expires_at.'),
  ('offer.cancelled', 'An offer was withdrawn (the lead went elsewhere). Data: id, lead_id, agent_id.'),
  ('message.received', 'A text came in. Data: id, lead_id, conversation_id, from_phone, to_phone, body, num_media, created_at.'),
  ('message.sent', 'A text went to the provider. Data: id, lead_id, conversation_id, to_phone, purpose, sender, sent_at.'),
  ('message.delivered', 'The provider reported a text delivered. Data: id, lead_id, conversation_id, to_phone, delivered_at.'),
  ('message.failed', 'A text failed or was not delivered. Data: id, lead_id, conversation_id, to_phone, status, error_code, error_message.'),
  ('consent.changed', 'A consent was recorded or revoked. Data: id, lead_id, channel, phone, email, purpose, method, given_at, revoked_at (null while current).'),
  ('consent.opt_out', 'A number opted out of texts (STOP in any words, or the carrier said so). Data: id, phone, source, keyword, occurred_at.'),
  ('nurture.enrolled', 'A lead was enrolled in a nurture sequence. Data: id (of the enrollment), lead_id, sequence_id, enrolled_via.'),
  ('nurture.stopped', 'A nurture enrollment stopped before its end. Data: id, lead_id, sequence_id, stop_reason, stopped_at.'),
  ('nurture.completed', 'A nurture enrollment ran all its steps. Data: id, lead_id, sequence_id, completed_at.'),
  ('form.submitted', 'A lead form submission was accepted. Data: id (of the submission), form_id, lead_id, outcome (created or merged), received_at.'),
  ('import.finished', 'An import batch ended. Data: id, status (completed or failed), row_count, created_count, merged_count, skipped_count, rejected_count, failure_reason, finished_at.')
on conflict (name) do update set description = excluded.description;

-- The log.
create table if not exists app_public.events (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid not null,
  seq bigint,
  type text not null,
  lead_id uuid,
  data jsonb not null default '{}',
  occurred_at timestamptz not null default clock_timestamp(),
  txid xid8 not null default pg_current_xact_id(),
  position bigint generated always as identity,
  constraint events_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint events_type_must_be_known foreign key (type) references app_public.event_types (name),
  constraint events_pkey primary key (tenant_id, id),
  constraint events_seq_must_be_unique_per_tenant unique (tenant_id, seq),
  constraint events_seq_must_be_positive check (seq > 0)
);
comment on table app_public.events is $$@behavior -insert -update -delete
The business’s domain events, oldest first: written in the same transaction as the change they tell of, never changed or deleted, numbered without gaps (seq) when that transaction commits. Webhook endpoints receive them; eventsAfter reads them after a cursor. Owners and admins.$$;
comment on column app_public.events.id is 'The event’s id: stable, the webhook-id of every delivery of it, so a receiver can drop what it already has.';
comment on column app_public.events.tenant_id is 'The business it belongs to.';
comment on column app_public.events.seq is 'Its number in the business’s sequence: 1, 2, 3, … without gaps, in commit order. The cursor of eventsAfter.';
comment on column app_public.events.type is 'What happened (see eventTypes), e.g. lead.created.';
comment on column app_public.events.lead_id is 'The lead it is about, if any.';
comment on column app_public.events.data is 'What happened, as the event type describes.';
comment on column app_public.events.occurred_at is 'When the change was written.';
comment on column app_public.events.txid is 'The transaction that wrote it (internal: how the commit finds the events to number).';
comment on column app_public.events.position is 'Its place among every event written (internal: the order within a transaction).';
create index if not exists events_to_number on app_public.events (txid) where seq is null;
create index if not exists events_by_type on app_public.events (tenant_id, type, seq);

--! Included platform/tg_events__append_only.sql
create or replace function app_private.tg_events__append_only() returns trigger
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if TG_OP = 'DELETE' then
    -- Events go only with their tenant (the cascade of the tenant’s deletion runs inside its foreign key’s trigger).
    if pg_catalog.pg_trigger_depth() < 2 then
      raise exception 'An event is history: it cannot be deleted; it goes only with its business' using errcode = '55000';
    end if;
    return OLD;
  end if;
  if TG_OP = 'UPDATE' then
    -- The one change an event takes: its number, once, when its transaction commits.
    if OLD.seq is not null or NEW.seq is null
       or (NEW.id, NEW.tenant_id, NEW.type, NEW.lead_id, NEW.data, NEW.occurred_at, NEW.txid, NEW.position)
          is distinct from (OLD.id, OLD.tenant_id, OLD.type, OLD.lead_id, OLD.data, OLD.occurred_at, OLD.txid, OLD.position) then
      raise exception 'An event is history: nothing in it changes' using errcode = '55000';
    end if;
    return NEW;
  end if;
  raise exception 'Events cannot be truncated' using errcode = '55000';
end;
$$;

comment on function app_private.tg_events__append_only() is $$Trigger (_010_append_only, before update or delete for each row, and before truncate, on app_public.events): an event is never rewritten or deleted (55000), for every role including the owner; the one update allowed is its number (seq), given once when its transaction commits, and the one delete the cascade of its tenant’s deletion.$$;
--! EndIncluded platform/tg_events__append_only.sql
drop trigger if exists _010_append_only on app_public.events;
create trigger _010_append_only before update or delete on app_public.events for each row execute function app_private.tg_events__append_only();
drop trigger if exists _010_append_only_truncate on app_public.events;
create trigger _010_append_only_truncate before truncate on app_public.events for each statement execute function app_private.tg_events__append_only();

alter table app_public.events enable row level security;
alter table app_public.events force row level security;
drop policy if exists owner_all on app_public.events;
create policy owner_all on app_public.events for all to :DATABASE_OWNER using (true) with check (true);
drop policy if exists select_as_admin on app_public.events;
create policy select_as_admin on app_public.events for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()) and seq is not null and (select app_hidden.current_user_has_role('admin')));
grant select (id, tenant_id, seq, type, lead_id, data, occurred_at) on app_public.events to :DATABASE_VISITOR;

create table if not exists app_private.event_counters (
  tenant_id uuid primary key,
  last_seq bigint not null,
  constraint event_counters_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint event_counters_last_seq_must_not_be_negative check (last_seq >= 0)
);
comment on table app_private.event_counters is 'The last number given in each business’s event sequence. Its row is locked from the moment a transaction’s events are numbered (at its commit) to the end of the commit: numbers follow commit order.';
comment on column app_private.event_counters.tenant_id is 'The business.';
comment on column app_private.event_counters.last_seq is 'The highest seq given.';
alter table app_private.event_counters enable row level security;
alter table app_private.event_counters force row level security;
drop policy if exists owner_all on app_private.event_counters;
create policy owner_all on app_private.event_counters for all to :DATABASE_OWNER using (true) with check (true);

-- Webhook endpoints, their secrets, deliveries and attempts.
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
  end;
$$;

comment on function app_hidden.webhook_url_problem(text) is $$What is wrong with a webhook endpoint’s URL, in words, or null: it must be an http(s) URL of at most 2000 characters with a host name (or a bracketed address) and an optional port, without spaces, a fragment, a user name or a password. Where the name points is checked when delivering: private, loopback and link-local addresses are refused unless the deployment allows them (WEBHOOK_ALLOW_PRIVATE_TARGETS).$$;
grant execute on function app_hidden.webhook_url_problem(text) to :DATABASE_VISITOR;
--! EndIncluded platform/webhook_url_problem.sql
create table if not exists app_public.webhook_endpoints (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  url text not null,
  description text,
  event_types text[] not null default '{}',
  enabled boolean not null default true,
  disable_after_seconds integer not null default 432000,
  failing_since timestamptz,
  disabled_at timestamptz,
  disabled_reason text,
  created_by_user_id uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint webhook_endpoints_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint webhook_endpoints_creator_must_exist foreign key (created_by_user_id) references app_public.users (id) on delete set null,
  constraint webhook_endpoints_id_must_be_unique_per_tenant unique (tenant_id, id),
  constraint webhook_endpoints_url_must_be_an_http_url check (app_hidden.webhook_url_problem(url) is null),
  constraint webhook_endpoints_description_must_be_at_most_500_characters check (pg_catalog.length(description) <= 500),
  constraint webhook_endpoints_event_types_must_be_at_most_50 check (pg_catalog.cardinality(event_types) <= 50),
  constraint webhook_endpoints_disable_after_seconds_must_be_300_to_2592000 check (disable_after_seconds between 300 and 2592000),
  constraint webhook_endpoints_disabled_reason_must_be_at_most_500_characters check (pg_catalog.length(disabled_reason) <= 500)
);
comment on table app_public.webhook_endpoints is $$@behavior -insert
Where the business’s events are sent: each new event of a type the endpoint takes is POSTed to its URL as JSON ({"id", "type", "sequence", "timestamp", "data"}), signed per Standard Webhooks, at least once, retried with a growing delay until a 2xx answer. Created with createWebhookEndpoint (which returns the secret); owners and admins manage them, and only they can read them. See docs/webhooks.md.$$;
comment on column app_public.webhook_endpoints.id is 'The endpoint’s id.';
comment on column app_public.webhook_endpoints.tenant_id is 'The business it belongs to.';
comment on column app_public.webhook_endpoints.url is 'Where events are POSTed: an http(s) URL (https in production). It must resolve to a public address: private, loopback and link-local ones are refused when delivering unless the deployment allows them (WEBHOOK_ALLOW_PRIVATE_TARGETS).';
comment on column app_public.webhook_endpoints.description is 'A note for people (at most 500 characters).';
comment on column app_public.webhook_endpoints.event_types is 'The event types it takes (see eventTypes); empty: every type.';
comment on column app_public.webhook_endpoints.enabled is 'Whether events are sent to it. Set to false to pause (events are still written and wait in the feed); set to true again to resume, which also clears an automatic turn-off.';
comment on column app_public.webhook_endpoints.disable_after_seconds is 'How long (300 to 2592000 seconds, default 5 days) it may fail without a single success before it is turned off and the owners are told.';
comment on column app_public.webhook_endpoints.failing_since is 'Since when its deliveries fail without a success in between; null while it is healthy.';
comment on column app_public.webhook_endpoints.disabled_at is 'When it was turned off, by a member or for failing; null while enabled.';
comment on column app_public.webhook_endpoints.disabled_reason is 'Why it was turned off.';
comment on column app_public.webhook_endpoints.created_by_user_id is 'The member who created it.';
comment on column app_public.webhook_endpoints.created_at is 'When it was created.';
comment on column app_public.webhook_endpoints.updated_at is 'When it was last changed.';
create index if not exists webhook_endpoints_enabled on app_public.webhook_endpoints (tenant_id) where enabled;

drop trigger if exists _100_timestamps on app_public.webhook_endpoints;
create trigger _100_timestamps before insert or update on app_public.webhook_endpoints for each row execute function app_private.tg__timestamps();
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
  elsif TG_OP = 'UPDATE' and not NEW.enabled and OLD.enabled and NEW.disabled_at is null then
    NEW.disabled_at := app_hidden.clock_now(NEW.tenant_id);
    NEW.disabled_reason := coalesce(NEW.disabled_reason, 'turned off by a member');
  end if;
  return NEW;
end;
$$;

comment on function app_private.tg_webhook_endpoints__validate() is $$Trigger (_200_validate, before insert or update on webhook_endpoints): refuses event types that are not in app_public.event_types (22023, naming them) and keeps the list sorted without repeats; when an endpoint is turned on again, clears why it was turned off and since when it failed; when a member turns it off, records when.$$;
--! EndIncluded platform/tg_webhook_endpoints__validate.sql
drop trigger if exists _200_validate on app_public.webhook_endpoints;
create trigger _200_validate before insert or update on app_public.webhook_endpoints for each row execute function app_private.tg_webhook_endpoints__validate();

alter table app_public.webhook_endpoints enable row level security;
alter table app_public.webhook_endpoints force row level security;
drop policy if exists owner_all on app_public.webhook_endpoints;
create policy owner_all on app_public.webhook_endpoints for all to :DATABASE_OWNER using (true) with check (true);
drop policy if exists select_as_admin on app_public.webhook_endpoints;
create policy select_as_admin on app_public.webhook_endpoints for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()) and (select app_hidden.current_user_has_role('admin')));
drop policy if exists update_as_admin on app_public.webhook_endpoints;
create policy update_as_admin on app_public.webhook_endpoints for update to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()) and (select app_hidden.current_user_has_role('admin')))
  with check (tenant_id = (select app_public.current_tenant_id()));
drop policy if exists delete_as_admin on app_public.webhook_endpoints;
create policy delete_as_admin on app_public.webhook_endpoints for delete to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()) and (select app_hidden.current_user_has_role('admin')));
grant select, delete on app_public.webhook_endpoints to :DATABASE_VISITOR;
grant update (url, description, event_types, enabled, disable_after_seconds) on app_public.webhook_endpoints to :DATABASE_VISITOR;

create table if not exists app_private.webhook_secrets (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  endpoint_id uuid not null,
  secret text not null,
  created_at timestamptz not null default clock_timestamp(),
  expires_at timestamptz,
  constraint webhook_secrets_endpoint_must_exist foreign key (tenant_id, endpoint_id) references app_public.webhook_endpoints (tenant_id, id) on delete cascade,
  constraint webhook_secrets_secret_must_be_a_whsec_key check (secret ~ '^whsec_[A-Za-z0-9+/=]{40,100}\Z')
);
comment on table app_private.webhook_secrets is 'The signing secrets of webhook endpoints (whsec_ and 32 random bytes in base64, as Standard Webhooks writes them). Every secret not yet expired signs each delivery; a rotation gives the old ones an expiry (the overlap).';
comment on column app_private.webhook_secrets.id is 'The secret’s id.';
comment on column app_private.webhook_secrets.tenant_id is 'The business of the endpoint.';
comment on column app_private.webhook_secrets.endpoint_id is 'The endpoint it signs for.';
comment on column app_private.webhook_secrets.secret is 'The secret, whsec_<base64>.';
comment on column app_private.webhook_secrets.created_at is 'When it was made.';
comment on column app_private.webhook_secrets.expires_at is 'When it stops signing; null: until the next rotation.';
create index if not exists webhook_secrets_by_endpoint on app_private.webhook_secrets (endpoint_id);
alter table app_private.webhook_secrets enable row level security;
alter table app_private.webhook_secrets force row level security;
drop policy if exists owner_all on app_private.webhook_secrets;
create policy owner_all on app_private.webhook_secrets for all to :DATABASE_OWNER using (true) with check (true);

create table if not exists app_public.webhook_deliveries (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  endpoint_id uuid not null,
  event_id uuid not null,
  event_seq bigint not null,
  event_type text not null,
  status text not null default 'pending',
  attempts integer not null default 0,
  next_attempt_at timestamptz not null,
  lease_until timestamptz,
  last_attempt_at timestamptz,
  last_status_code integer,
  delivered_at timestamptz,
  created_at timestamptz not null default now(),
  constraint webhook_deliveries_endpoint_must_exist foreign key (tenant_id, endpoint_id) references app_public.webhook_endpoints (tenant_id, id) on delete cascade,
  constraint webhook_deliveries_event_must_exist foreign key (tenant_id, event_id) references app_public.events (tenant_id, id) on delete cascade,
  constraint webhook_deliveries_id_must_be_unique_per_tenant unique (tenant_id, id),
  constraint webhook_deliveries_event_must_be_delivered_once_per_endpoint unique (tenant_id, endpoint_id, event_id),
  constraint webhook_deliveries_status_must_be_known check (status in ('pending', 'delivered', 'failed')),
  constraint webhook_deliveries_attempts_must_not_be_negative check (attempts >= 0)
);
comment on table app_public.webhook_deliveries is $$@behavior -insert -update -delete
One event for one webhook endpoint: pending (waiting, or waiting for a retry at nextAttemptAt), delivered (a 2xx answer) or failed (20 attempts without one). redeliverWebhook sends one again. Owners and admins.$$;
comment on column app_public.webhook_deliveries.id is 'The delivery’s id.';
comment on column app_public.webhook_deliveries.tenant_id is 'The business.';
comment on column app_public.webhook_deliveries.endpoint_id is 'The endpoint.';
comment on column app_public.webhook_deliveries.event_id is 'The event (its id is the webhook-id header).';
comment on column app_public.webhook_deliveries.event_seq is 'The event’s number.';
comment on column app_public.webhook_deliveries.event_type is 'The event’s type.';
comment on column app_public.webhook_deliveries.status is 'pending, delivered or failed.';
comment on column app_public.webhook_deliveries.attempts is 'Attempts so far (since the last redelivery).';
comment on column app_public.webhook_deliveries.next_attempt_at is 'When it is (or was) due next.';
comment on column app_public.webhook_deliveries.lease_until is 'While a worker sends it: until when the worker holds it (internal).';
comment on column app_public.webhook_deliveries.last_attempt_at is 'When the last attempt ended.';
comment on column app_public.webhook_deliveries.last_status_code is 'The HTTP status of the last attempt (null: no answer).';
comment on column app_public.webhook_deliveries.delivered_at is 'When a 2xx answer came.';
comment on column app_public.webhook_deliveries.created_at is 'When it was queued.';
create index if not exists webhook_deliveries_due on app_public.webhook_deliveries (endpoint_id, next_attempt_at) where status = 'pending';
create index if not exists webhook_deliveries_of_event on app_public.webhook_deliveries (tenant_id, event_id);
alter table app_public.webhook_deliveries enable row level security;
alter table app_public.webhook_deliveries force row level security;
drop policy if exists owner_all on app_public.webhook_deliveries;
create policy owner_all on app_public.webhook_deliveries for all to :DATABASE_OWNER using (true) with check (true);
drop policy if exists select_as_admin on app_public.webhook_deliveries;
create policy select_as_admin on app_public.webhook_deliveries for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()) and (select app_hidden.current_user_has_role('admin')));
grant select on app_public.webhook_deliveries to :DATABASE_VISITOR;

create table if not exists app_public.webhook_delivery_attempts (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  delivery_id uuid not null,
  endpoint_id uuid not null,
  attempt integer not null,
  attempted_at timestamptz not null,
  status_code integer,
  error text,
  duration_ms integer not null,
  response_body text,
  constraint webhook_delivery_attempts_delivery_must_exist foreign key (tenant_id, delivery_id) references app_public.webhook_deliveries (tenant_id, id) on delete cascade,
  constraint webhook_delivery_attempts_endpoint_must_exist foreign key (tenant_id, endpoint_id) references app_public.webhook_endpoints (tenant_id, id) on delete cascade,
  constraint webhook_delivery_attempts_have_an_answer_or_an_error check (status_code is not null or error is not null),
  constraint webhook_delivery_attempts_texts_must_be_bounded check (pg_catalog.length(error) <= 500 and pg_catalog.length(response_body) <= 1000)
);
comment on table app_public.webhook_delivery_attempts is $$@behavior -insert -update -delete
Every attempt to deliver a webhook: when, the HTTP status or the error (timeout, refused address, …), how long it took and the start of the answer. Owners and admins.$$;
comment on column app_public.webhook_delivery_attempts.id is 'The attempt’s id.';
comment on column app_public.webhook_delivery_attempts.tenant_id is 'The business.';
comment on column app_public.webhook_delivery_attempts.delivery_id is 'The delivery.';
comment on column app_public.webhook_delivery_attempts.endpoint_id is 'The endpoint.';
comment on column app_public.webhook_delivery_attempts.attempt is 'Which attempt of the delivery it was (1, 2, …).';
comment on column app_public.webhook_delivery_attempts.attempted_at is 'When it ended.';
comment on column app_public.webhook_delivery_attempts.status_code is 'The HTTP status of the answer; null when there was none.';
comment on column app_public.webhook_delivery_attempts.error is 'Why there was no answer (at most 500 characters).';
comment on column app_public.webhook_delivery_attempts.duration_ms is 'How long it took, in milliseconds.';
comment on column app_public.webhook_delivery_attempts.response_body is 'The first 1000 characters of the answer.';
create index if not exists webhook_delivery_attempts_of_delivery on app_public.webhook_delivery_attempts (tenant_id, delivery_id, attempted_at);
create index if not exists webhook_delivery_attempts_of_endpoint on app_public.webhook_delivery_attempts (tenant_id, endpoint_id, attempted_at);
alter table app_public.webhook_delivery_attempts enable row level security;
alter table app_public.webhook_delivery_attempts force row level security;
drop policy if exists owner_all on app_public.webhook_delivery_attempts;
create policy owner_all on app_public.webhook_delivery_attempts for all to :DATABASE_OWNER using (true) with check (true);
drop policy if exists select_as_admin on app_public.webhook_delivery_attempts;
create policy select_as_admin on app_public.webhook_delivery_attempts for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()) and (select app_hidden.current_user_has_role('admin')));
grant select on app_public.webhook_delivery_attempts to :DATABASE_VISITOR;

-- Numbering and fan-out at the commit.
--! Included platform/tg_events__number.sql
create or replace function app_private.tg_events__number() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_xact xid8 := pg_catalog.pg_current_xact_id();
  v_tenant uuid;
  v_count bigint;
  v_last bigint;
  v_endpoints uuid[];
  v_endpoint uuid;
begin
  -- Numbered already by an earlier call of this commit (one index lookup, so n events cost n lookups).
  if exists (select 1 from app_public.events e where e.tenant_id = NEW.tenant_id and e.id = NEW.id and e.seq is not null) then
    return null;
  end if;
  -- Deferred to the commit: the first of the transaction’s events to get here numbers them all (the
  -- others find nothing left). Each tenant’s counter row stays locked from here to the commit, so the
  -- tenant’s numbers are given in commit order and a reader never sees a later number before an
  -- earlier one commits: a cursor skips nothing. Tenants in id order, so two transactions writing
  -- events of the same two tenants cannot deadlock.
  for v_tenant in
    select distinct e.tenant_id from app_public.events e
    where e.txid = v_xact and e.seq is null
    order by e.tenant_id
  loop
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

comment on function app_private.tg_events__number() is $$Constraint trigger (_900_number, after insert on app_public.events, deferrable initially deferred: it runs at the commit): gives the transaction’s events their numbers in their tenant’s gap-free sequence (app_private.event_counters, locked until the commit, so numbers follow commit order and a cursor never skips one), in the order they were written; then writes a delivery for each event to each enabled webhook endpoint of the tenant that takes its type, and enqueues one webhook__deliver job per endpoint that got one (job key webhook_endpoint:<id>). A rolled-back transaction takes its numbers back with it.$$;
--! EndIncluded platform/tg_events__number.sql
drop trigger if exists _900_number on app_public.events;
create constraint trigger _900_number after insert on app_public.events deferrable initially deferred
  for each row execute function app_private.tg_events__number();

-- Owners are told when an endpoint is turned off for failing.
alter table app_public.notifications drop constraint if exists notifications_kind_must_be_known;
alter table app_public.notifications add constraint notifications_kind_must_be_known
  check (kind in ('lead_qualified', 'conversation_needs_human', 'webhook_endpoint_disabled'));
comment on column app_public.notifications.kind is 'lead_qualified, conversation_needs_human or webhook_endpoint_disabled.';

drop type if exists app_public.created_webhook_endpoint cascade;
create type app_public.created_webhook_endpoint as (
  id uuid, tenant_id uuid, url text, event_types text[], description text, enabled boolean, created_at timestamptz, secret text);
comment on type app_public.created_webhook_endpoint is 'A new webhook endpoint with its signing secret, shown only this once.';
comment on column app_public.created_webhook_endpoint.id is 'The endpoint’s id.';
comment on column app_public.created_webhook_endpoint.tenant_id is 'The business.';
comment on column app_public.created_webhook_endpoint.url is 'Where events are POSTed.';
comment on column app_public.created_webhook_endpoint.event_types is 'The event types it takes; empty: every type.';
comment on column app_public.created_webhook_endpoint.description is 'The note for people.';
comment on column app_public.created_webhook_endpoint.enabled is 'Whether events are sent to it.';
comment on column app_public.created_webhook_endpoint.created_at is 'When it was created.';
comment on column app_public.created_webhook_endpoint.secret is 'The signing secret (whsec_…), for the receiver’s Standard Webhooks library: shown only this once.';

--! Included platform/record_event.sql
create or replace function app_private.record_event(tenant_id uuid, type text, lead_id uuid, data jsonb) returns void
  language sql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  insert into app_public.events (tenant_id, type, lead_id, data)
  values (record_event.tenant_id, record_event.type, record_event.lead_id, coalesce(record_event.data, '{}'::jsonb));
$$;

comment on function app_private.record_event(uuid, text, uuid, jsonb) is $$Writes one domain event of a tenant (a type of app_public.event_types, the lead it is about or null, its data) in the caller’s transaction; it gets its number in the tenant’s sequence when the transaction commits, and goes to the tenant’s webhook endpoints that take its type. For functions; tables write theirs through triggers (app_private.tg__record_event).$$;
--! EndIncluded platform/record_event.sql
--! Included platform/tg__record_event.sql
create or replace function app_private.tg__record_event() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_row jsonb := pg_catalog.to_jsonb(NEW);
begin
  -- TG_ARGV: the event type, the column naming the lead (or ''), then the columns the event carries.
  insert into app_public.events (tenant_id, type, lead_id, data)
  values (
    NEW.tenant_id,
    TG_ARGV[0],
    nullif(v_row ->> TG_ARGV[1], '')::uuid,
    (select coalesce(pg_catalog.jsonb_object_agg(c.name, v_row -> c.name), '{}'::jsonb)
       from pg_catalog.unnest(TG_ARGV[2:]) as c(name)));
  return null;
end;
$$;

comment on function app_private.tg__record_event() is $$Generic trigger (after insert or update, for each row; the trigger’s WHEN clause says which changes count): writes one domain event of the row’s tenant to app_public.events, numbered when the transaction commits. Arguments: the event type (a name in app_public.event_types), the column holding the lead’s id (or '' for none), then the columns the event’s data carries, with their new values.$$;
--! EndIncluded platform/tg__record_event.sql
--! Included platform/webhook_retry_delay.sql
create or replace function app_hidden.webhook_retry_delay(attempt integer) returns interval
  language sql immutable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select pg_catalog.make_interval(secs => least(5 * pg_catalog.power(2::numeric, greatest(webhook_retry_delay.attempt, 1) - 1), 21600)::double precision);
$$;

comment on function app_hidden.webhook_retry_delay(integer) is $$How long a webhook delivery waits after its attempt number attempt failed: 5 seconds, doubling with each failed attempt (10 s, 20 s, 40 s, …), at most 6 hours. A delivery gives up after 20 attempts (about two days); an endpoint that keeps failing is turned off sooner (webhook_endpoints.disable_after_seconds).$$;
grant execute on function app_hidden.webhook_retry_delay(integer) to :DATABASE_VISITOR;
--! EndIncluded platform/webhook_retry_delay.sql
--! Included platform/schedule_webhook_endpoint.sql
create or replace function app_private.schedule_webhook_endpoint(endpoint_id uuid) returns timestamptz
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant uuid;
  v_next timestamptz;
begin
  select w.tenant_id into v_tenant from app_public.webhook_endpoints w
  where w.id = schedule_webhook_endpoint.endpoint_id and w.enabled;
  if v_tenant is null then
    return null;
  end if;
  select pg_catalog.min(d.next_attempt_at) into v_next from app_public.webhook_deliveries d
  where d.endpoint_id = schedule_webhook_endpoint.endpoint_id and d.status = 'pending'
    and (d.lease_until is null or d.lease_until < pg_catalog.clock_timestamp());
  if v_next is null then
    return null;
  end if;
  -- next_attempt_at is on the tenant’s clock; the job runs on the real one.
  perform app_private.add_job('webhook__deliver', pg_catalog.json_build_object('endpoint_id', schedule_webhook_endpoint.endpoint_id),
    run_at => pg_catalog.now() + greatest(v_next - app_hidden.clock_now(v_tenant), interval '0'),
    job_key => 'webhook_endpoint:' || schedule_webhook_endpoint.endpoint_id, job_key_mode => 'replace');
  return v_next;
end;
$$;

comment on function app_private.schedule_webhook_endpoint(uuid) is $$Enqueues the webhook__deliver job of an enabled endpoint (job key webhook_endpoint:<id>) for its earliest pending delivery not being sent now, and returns that time (on the tenant’s clock), or null when nothing waits or the endpoint is off.$$;
--! EndIncluded platform/schedule_webhook_endpoint.sql
--! Included platform/create_webhook_endpoint.sql
create or replace function app_public.create_webhook_endpoint(url text, event_types text[] default '{}', description text default null,
    disable_after_seconds integer default 432000) returns app_public.created_webhook_endpoint
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_tenant_id uuid := app_private.require_tenant_role('admin', 'manage webhook endpoints');
  v_problem text := app_hidden.webhook_url_problem(create_webhook_endpoint.url);
  v_endpoint app_public.webhook_endpoints;
  v_secret text := 'whsec_' || pg_catalog.encode(public.gen_random_bytes(32), 'base64');
begin
  if v_problem is not null then
    raise exception 'Invalid webhook URL: %', v_problem using errcode = '22023';
  end if;
  -- Endpoints of one business are counted under its lock, so two concurrent calls cannot pass the limit.
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('webhook_endpoints:' || v_tenant_id, 0));
  if (select pg_catalog.count(*) from app_public.webhook_endpoints w where w.tenant_id = v_tenant_id) >= 20 then
    raise exception 'A business may have at most 20 webhook endpoints: delete one first' using errcode = '55000';
  end if;
  insert into app_public.webhook_endpoints (tenant_id, url, event_types, description, disable_after_seconds, created_by_user_id)
  values (v_tenant_id, pg_catalog.btrim(create_webhook_endpoint.url), coalesce(create_webhook_endpoint.event_types, '{}'),
          nullif(pg_catalog.btrim(create_webhook_endpoint.description), ''),
          coalesce(create_webhook_endpoint.disable_after_seconds, 432000), app_public.current_user_id())
  returning * into v_endpoint;
  insert into app_private.webhook_secrets (tenant_id, endpoint_id, secret) values (v_tenant_id, v_endpoint.id, v_secret);
  return (v_endpoint.id, v_endpoint.tenant_id, v_endpoint.url, v_endpoint.event_types, v_endpoint.description,
          v_endpoint.enabled, v_endpoint.created_at, v_secret)::app_public.created_webhook_endpoint;
end;
$$;

comment on function app_public.create_webhook_endpoint(text, text[], text, integer) is $$Creates a webhook endpoint of the current business: every new event whose type is in eventTypes (none: every type; see eventTypes) is POSTed to url, signed per Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature) with the secret returned here, shown only this once (rotateWebhookSecret makes a new one). disableAfterSeconds (300 to 2592000, default 5 days): how long the endpoint may keep failing before it is turned off and the owners are told. Owners and admins; at most 20 endpoints per business. Errors: 42501 not allowed; 22023 an invalid URL or an unknown event type; 55000 too many endpoints; 23514 disableAfterSeconds out of range.$$;
grant execute on function app_public.create_webhook_endpoint(text, text[], text, integer) to :DATABASE_VISITOR;
--! EndIncluded platform/create_webhook_endpoint.sql
--! Included platform/rotate_webhook_secret.sql
create or replace function app_public.rotate_webhook_secret(endpoint_id uuid, overlap_seconds integer default 86400) returns text
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('admin', 'manage webhook endpoints');
  v_secret text := 'whsec_' || pg_catalog.encode(public.gen_random_bytes(32), 'base64');
  v_until timestamptz;
begin
  if rotate_webhook_secret.overlap_seconds is null or rotate_webhook_secret.overlap_seconds not between 0 and 604800 then
    raise exception 'overlapSeconds must be 0 to 604800 (7 days)' using errcode = '22023';
  end if;
  perform 1 from app_public.webhook_endpoints w
  where w.id = rotate_webhook_secret.endpoint_id and w.tenant_id = v_tenant_id
  for update;
  if not found then
    raise exception 'No webhook endpoint %', rotate_webhook_secret.endpoint_id using errcode = 'P0002';
  end if;
  v_until := pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => rotate_webhook_secret.overlap_seconds);
  delete from app_private.webhook_secrets s
  where s.endpoint_id = rotate_webhook_secret.endpoint_id and s.expires_at <= pg_catalog.clock_timestamp();
  update app_private.webhook_secrets s set expires_at = v_until
  where s.endpoint_id = rotate_webhook_secret.endpoint_id and (s.expires_at is null or s.expires_at > v_until);
  insert into app_private.webhook_secrets (tenant_id, endpoint_id, secret)
  values (v_tenant_id, rotate_webhook_secret.endpoint_id, v_secret);
  return v_secret;
end;
$$;

comment on function app_public.rotate_webhook_secret(uuid, integer) is $$Gives a webhook endpoint a new signing secret and returns it, shown only this once. For overlapSeconds (0 to 604800, default one day) deliveries carry a signature with the old secret too (webhook-signature lists both), so the receiver can switch without losing a message; after that only the new one signs. Owners and admins. Errors: 42501 not allowed; P0002 no such endpoint in this business; 22023 overlap out of range.$$;
grant execute on function app_public.rotate_webhook_secret(uuid, integer) to :DATABASE_VISITOR;
--! EndIncluded platform/rotate_webhook_secret.sql
--! Included platform/redeliver_webhook.sql
create or replace function app_public.redeliver_webhook(delivery_id uuid) returns app_public.webhook_deliveries
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('admin', 'redeliver webhooks');
  v_delivery app_public.webhook_deliveries;
begin
  select d.* into v_delivery from app_public.webhook_deliveries d
  where d.id = redeliver_webhook.delivery_id and d.tenant_id = v_tenant_id
  for update;
  if not found then
    raise exception 'No webhook delivery %', redeliver_webhook.delivery_id using errcode = 'P0002';
  end if;
  if v_delivery.status = 'pending' and v_delivery.lease_until > pg_catalog.clock_timestamp() then
    raise exception 'This delivery is being sent right now: wait for its attempt to end' using errcode = '55000';
  end if;
  if not (select w.enabled from app_public.webhook_endpoints w where w.id = v_delivery.endpoint_id) then
    raise exception 'The webhook endpoint is turned off: turn it on (updateWebhookEndpoint, enabled: true) to deliver' using errcode = '55000';
  end if;
  update app_public.webhook_deliveries d
  set status = 'pending', attempts = 0, next_attempt_at = app_hidden.clock_now(v_tenant_id), lease_until = null, delivered_at = null
  where d.id = v_delivery.id
  returning * into v_delivery;
  perform app_private.schedule_webhook_endpoint(v_delivery.endpoint_id);
  return v_delivery;
end;
$$;

comment on function app_public.redeliver_webhook(uuid) is $$Sends one webhook delivery again, now, whatever became of it (delivered, failed or waiting for a retry): same event, same webhook-id, so a receiver that already has it can tell. Its attempts start again from zero; the earlier attempts stay in webhookDeliveryAttempts. Owners and admins. Errors: 42501 not allowed; P0002 no such delivery in this business; 55000 the endpoint is turned off, or the delivery is being sent at this moment.$$;
grant execute on function app_public.redeliver_webhook(uuid) to :DATABASE_VISITOR;
--! EndIncluded platform/redeliver_webhook.sql
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

comment on function app_public.replay_webhook_events(uuid, bigint, integer) is $$Sends a webhook endpoint the business’s events after number afterSeq again (at most maxCount, 1 to 10000, default 1000, oldest first), those of the types it takes: for instance what happened while it was turned off. Each keeps its webhook-id. Returns how many deliveries were queued (those already waiting are left as they are). Owners and admins. Errors: 42501 not allowed; P0002 no such endpoint in this business; 55000 the endpoint is turned off; 22023 maxCount or afterSeq out of range.$$;
grant execute on function app_public.replay_webhook_events(uuid, bigint, integer) to :DATABASE_VISITOR;
--! EndIncluded platform/replay_webhook_events.sql
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
  select pg_catalog.array_agg(s.secret order by s.created_at desc) into v_secrets
  from app_private.webhook_secrets s
  where s.endpoint_id = v_endpoint.id and (s.expires_at is null or s.expires_at > pg_catalog.clock_timestamp());
  return query
  with due as (
    select d.id from app_public.webhook_deliveries d
    where d.endpoint_id = v_endpoint.id and d.status = 'pending' and d.next_attempt_at <= v_now
      and (d.lease_until is null or d.lease_until < pg_catalog.clock_timestamp())
    order by d.event_seq
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

comment on function app_private.claim_webhook_deliveries(uuid, integer, integer) is $$For the webhook__deliver task: takes up to max_count (at most 1000) deliveries of an enabled endpoint that are due (on the tenant’s clock) and not being sent, oldest event first, leases them for lease_seconds (a worker that dies holding them loses them to the next run after that) and counts the attempt; returns each with the URL, the endpoint’s current secrets (newest first, for the signatures) and the body to POST: {"id", "type", "sequence", "timestamp", "data"}. When nothing is due it enqueues the endpoint’s job for its earliest retry and returns no rows.$$;
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
    update app_public.webhook_endpoints w set failing_since = null where w.id = v_delivery.endpoint_id and w.failing_since is not null;
    return 'delivered';
  end if;

  update app_public.webhook_deliveries d
  set status = case when d.attempts >= 20 then 'failed' else 'pending' end,
      next_attempt_at = v_now + app_hidden.webhook_retry_delay(d.attempts),
      lease_until = null, last_attempt_at = v_now, last_status_code = record_webhook_attempt.status_code
  where d.id = v_delivery.id
  returning * into v_delivery;
  update app_public.webhook_endpoints w set failing_since = coalesce(w.failing_since, v_now)
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

comment on function app_private.record_webhook_attempt(uuid, integer, text, integer, text) is $$For the webhook__deliver task: records one attempt of a delivery (HTTP status or the error, its duration, the start of the answer) in webhook_delivery_attempts. A 2xx answer delivers it and ends the endpoint’s failing streak. Anything else retries it after app_hidden.webhook_retry_delay (on the tenant’s clock), gives it up after 20 attempts (failed), and starts the endpoint’s failing streak; an endpoint failing for longer than its disable_after_seconds is turned off and its owners are told (a notification and an email). Returns delivered, retry, failed, disabled, or the delivery’s status when it was no longer pending (gone when it was deleted with its endpoint).$$;
--! EndIncluded platform/record_webhook_attempt.sql
--! Included platform/sweep_webhook_deliveries.sql
create or replace function app_private.sweep_webhook_deliveries() returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_endpoint uuid;
  v_count integer := 0;
begin
  for v_endpoint in
    select distinct d.endpoint_id
    from app_public.webhook_deliveries d
    join app_public.webhook_endpoints w on w.id = d.endpoint_id and w.enabled
    where d.status = 'pending' and d.next_attempt_at <= app_hidden.clock_now(d.tenant_id)
      and (d.lease_until is null or d.lease_until < pg_catalog.clock_timestamp())
  loop
    perform app_private.schedule_webhook_endpoint(v_endpoint);
    v_count := v_count + 1;
  end loop;
  return v_count;
end;
$$;

comment on function app_private.sweep_webhook_deliveries() is $$For the webhook__sweep task (every minute): enqueues the job of every enabled endpoint with a due delivery that nobody is sending (its lease ran out: a worker died holding it, or its job was lost), so no event waits for more than about a minute after it is due. Returns how many endpoints got their job.$$;
--! EndIncluded platform/sweep_webhook_deliveries.sql
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
    select pg_catalog.string_agg(pg_catalog.quote_literal(t.name), ', ') into v_unknown
    from pg_catalog.unnest(events_after.types) t(name)
    where not exists (select 1 from app_public.event_types k where k.name = t.name);
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
--! Included messaging/wake_due_jobs.sql
create or replace function app_private.wake_due_jobs(tenant_id uuid) returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_id uuid;
  v_count integer := 0;
  v_now timestamptz := app_hidden.clock_now(wake_due_jobs.tenant_id);
begin
  for v_id in
    select e.id from app_public.email_messages e
    where e.tenant_id = wake_due_jobs.tenant_id and e.status = 'queued' and e.scheduled_for <= v_now
  loop
    perform app_private.enqueue_email_send(v_id);
    v_count := v_count + 1;
  end loop;
  for v_id in
    select m.id from app_public.messages m
    where m.tenant_id = wake_due_jobs.tenant_id and m.status = 'queued' and m.scheduled_for <= v_now
  loop
    perform app_private.enqueue_sms_send(v_id);
    v_count := v_count + 1;
  end loop;
  for v_id in
    select e.id from app_public.lead_sequence_enrollments e
    where e.tenant_id = wake_due_jobs.tenant_id and e.status = 'active' and e.next_step_at <= v_now
  loop
    perform app_private.add_job('nurture__run_step',
      (select pg_catalog.json_build_object('enrollment_id', e.id, 'step', e.next_step_number) from app_public.lead_sequence_enrollments e where e.id = v_id),
      job_key => (select 'nurture:' || e.id || ':' || e.next_step_number from app_public.lead_sequence_enrollments e where e.id = v_id),
      max_attempts => 10);
    v_count := v_count + 1;
  end loop;
  -- Webhook endpoints with a delivery now due by the tenant’s clock (a retry after a failure).
  for v_id in
    select distinct d.endpoint_id from app_public.webhook_deliveries d
    where d.tenant_id = wake_due_jobs.tenant_id and d.status = 'pending' and d.next_attempt_at <= v_now
  loop
    if app_private.schedule_webhook_endpoint(v_id) is not null then
      v_count := v_count + 1;
    end if;
  end loop;
  return v_count;
end;
$$;

comment on function app_private.wake_due_jobs(uuid) is 'After the clock of a tenant moved forward: everything of the tenant now due by its clock (queued emails and texts, nurture steps, webhook deliveries waiting for a retry) gets its job at once instead of at the real time it was placed at. Returns how many jobs were moved.';
--! EndIncluded messaging/wake_due_jobs.sql

-- Who writes which events.
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
  where c.changes is not null;
  return null;
end;
$$;

comment on function app_private.tg_leads__events() is $$Trigger (_950_events_on_insert and _950_events_on_update, after insert or update on leads, for each statement): writes the events lead.created (the lead’s contact fields, source, status, tags and attributes), lead.status_changed (from, to) and lead.updated (the fields that changed with their new values, except status and the owner, which have their own events, and derived fields) for the rows of the statement, in one insert.$$;
--! EndIncluded crm/tg_leads__events.sql
drop trigger if exists _950_events_on_insert on app_public.leads;
create trigger _950_events_on_insert after insert on app_public.leads referencing new table as new_leads
  for each statement execute function app_private.tg_leads__events();
drop trigger if exists _950_events_on_update on app_public.leads;
create trigger _950_events_on_update after update on app_public.leads referencing old table as old_leads new table as new_leads
  for each statement execute function app_private.tg_leads__events();

drop trigger if exists _950_event_assigned on app_public.lead_assignments;
create trigger _950_event_assigned after insert on app_public.lead_assignments for each row
  execute function app_private.tg__record_event('lead.assigned', 'lead_id', 'id', 'lead_id', 'from_agent_id', 'to_agent_id', 'from_user_id', 'to_user_id', 'strategy', 'reason', 'assigned_at');

drop trigger if exists _950_event_queued on app_public.assignment_queue;
create trigger _950_event_queued after insert on app_public.assignment_queue for each row
  execute function app_private.tg__record_event('lead.queued', 'lead_id', 'id', 'lead_id', 'queue_type', 'priority', 'sla_expires_at');

drop trigger if exists _950_event_created on app_public.routing_offers;
create trigger _950_event_created after insert on app_public.routing_offers for each row
  execute function app_private.tg__record_event('offer.created', 'lead_id', 'id', 'lead_id', 'agent_id', 'expires_at');
drop trigger if exists _950_event_accepted on app_public.routing_offers;
create trigger _950_event_accepted after update of status on app_public.routing_offers for each row
  when (old.status is distinct from new.status and new.status = 'accepted')
  execute function app_private.tg__record_event('offer.accepted', 'lead_id', 'id', 'lead_id', 'agent_id', 'responded_at');
drop trigger if exists _950_event_rejected on app_public.routing_offers;
create trigger _950_event_rejected after update of status on app_public.routing_offers for each row
  when (old.status is distinct from new.status and new.status = 'rejected')
  execute function app_private.tg__record_event('offer.rejected', 'lead_id', 'id', 'lead_id', 'agent_id', 'responded_at', 'decline_reason');
drop trigger if exists _950_event_expired on app_public.routing_offers;
create trigger _950_event_expired after update of status on app_public.routing_offers for each row
  when (old.status is distinct from new.status and new.status = 'expired')
  execute function app_private.tg__record_event('offer.expired', 'lead_id', 'id', 'lead_id', 'agent_id', 'expires_at');
drop trigger if exists _950_event_cancelled on app_public.routing_offers;
create trigger _950_event_cancelled after update of status on app_public.routing_offers for each row
  when (old.status is distinct from new.status and new.status = 'cancelled')
  execute function app_private.tg__record_event('offer.cancelled', 'lead_id', 'id', 'lead_id', 'agent_id');

drop trigger if exists _950_event_received on app_public.messages;
create trigger _950_event_received after insert on app_public.messages for each row
  when (new.direction = 'inbound')
  execute function app_private.tg__record_event('message.received', 'lead_id', 'id', 'lead_id', 'conversation_id', 'from_phone', 'to_phone', 'body', 'num_media', 'created_at');
drop trigger if exists _950_event_sent on app_public.messages;
create trigger _950_event_sent after update of status on app_public.messages for each row
  when (new.direction = 'outbound' and old.status is distinct from new.status and new.status = 'sent')
  execute function app_private.tg__record_event('message.sent', 'lead_id', 'id', 'lead_id', 'conversation_id', 'to_phone', 'purpose', 'sender', 'sent_at');
drop trigger if exists _950_event_delivered on app_public.messages;
create trigger _950_event_delivered after update of status on app_public.messages for each row
  when (new.direction = 'outbound' and old.status is distinct from new.status and new.status = 'delivered')
  execute function app_private.tg__record_event('message.delivered', 'lead_id', 'id', 'lead_id', 'conversation_id', 'to_phone', 'delivered_at');
drop trigger if exists _950_event_failed on app_public.messages;
create trigger _950_event_failed after update of status on app_public.messages for each row
  when (new.direction = 'outbound' and old.status is distinct from new.status and new.status in ('failed', 'undelivered'))
  execute function app_private.tg__record_event('message.failed', 'lead_id', 'id', 'lead_id', 'conversation_id', 'to_phone', 'status', 'error_code', 'error_message');

drop trigger if exists _950_event_given on app_public.consent_records;
create trigger _950_event_given after insert on app_public.consent_records for each row
  execute function app_private.tg__record_event('consent.changed', 'lead_id', 'id', 'lead_id', 'channel', 'phone', 'email', 'purpose', 'method', 'given_at', 'revoked_at');
drop trigger if exists _950_event_revoked on app_public.consent_records;
create trigger _950_event_revoked after update of revoked_at on app_public.consent_records for each row
  when (old.revoked_at is null and new.revoked_at is not null)
  execute function app_private.tg__record_event('consent.changed', 'lead_id', 'id', 'lead_id', 'channel', 'phone', 'email', 'purpose', 'method', 'given_at', 'revoked_at');

drop trigger if exists _950_event_opt_out on app_public.sms_consent_events;
create trigger _950_event_opt_out after insert on app_public.sms_consent_events for each row
  when (new.event = 'opt_out')
  execute function app_private.tg__record_event('consent.opt_out', '', 'id', 'phone', 'source', 'keyword', 'occurred_at');

drop trigger if exists _950_event_enrolled on app_public.lead_sequence_enrollments;
create trigger _950_event_enrolled after insert on app_public.lead_sequence_enrollments for each row
  execute function app_private.tg__record_event('nurture.enrolled', 'lead_id', 'id', 'lead_id', 'sequence_id', 'enrolled_via');
drop trigger if exists _950_event_stopped on app_public.lead_sequence_enrollments;
create trigger _950_event_stopped after update of status on app_public.lead_sequence_enrollments for each row
  when (old.status is distinct from new.status and new.status = 'stopped')
  execute function app_private.tg__record_event('nurture.stopped', 'lead_id', 'id', 'lead_id', 'sequence_id', 'stop_reason', 'stopped_at');
drop trigger if exists _950_event_completed on app_public.lead_sequence_enrollments;
create trigger _950_event_completed after update of status on app_public.lead_sequence_enrollments for each row
  when (old.status is distinct from new.status and new.status = 'completed')
  execute function app_private.tg__record_event('nurture.completed', 'lead_id', 'id', 'lead_id', 'sequence_id', 'completed_at');

drop trigger if exists _950_event_submitted on app_public.lead_form_submissions;
create trigger _950_event_submitted after insert on app_public.lead_form_submissions for each row
  when (new.outcome <> 'refused')
  execute function app_private.tg__record_event('form.submitted', 'lead_id', 'id', 'form_id', 'lead_id', 'outcome', 'received_at');

drop trigger if exists _950_event_finished on app_public.import_batches;
create trigger _950_event_finished after update of status on app_public.import_batches for each row
  when (old.status = 'running' and new.status <> 'running')
  execute function app_private.tg__record_event('import.finished', '', 'id', 'status', 'row_count', 'created_count', 'merged_count', 'skipped_count', 'rejected_count', 'failure_reason', 'finished_at');

--! Included platform/tg_webhook_endpoints__resume.sql
create or replace function app_private.tg_webhook_endpoints__resume() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- What waited for a retry goes now, not at the end of a backoff grown while the endpoint was down.
  update app_public.webhook_deliveries d set next_attempt_at = app_hidden.clock_now(NEW.tenant_id)
  where d.endpoint_id = NEW.id and d.status = 'pending' and d.next_attempt_at > app_hidden.clock_now(NEW.tenant_id);
  perform app_private.schedule_webhook_endpoint(NEW.id);
  return null;
end;
$$;

comment on function app_private.tg_webhook_endpoints__resume() is $$Trigger (_900_resume, after an endpoint is turned on again): its pending deliveries become due at once and its webhook__deliver job is enqueued.$$;
--! EndIncluded platform/tg_webhook_endpoints__resume.sql
drop trigger if exists _900_resume on app_public.webhook_endpoints;
create trigger _900_resume after update of enabled on app_public.webhook_endpoints for each row
  when (new.enabled and not old.enabled)
  execute function app_private.tg_webhook_endpoints__resume();
