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

--!include platform/tg_events__append_only.sql
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
--!include platform/webhook_url_problem.sql
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
--!include platform/tg_webhook_endpoints__validate.sql
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
--!include platform/tg_events__number.sql
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

--!include platform/record_event.sql
--!include platform/tg__record_event.sql
--!include platform/webhook_retry_delay.sql
--!include platform/schedule_webhook_endpoint.sql
--!include platform/create_webhook_endpoint.sql
--!include platform/rotate_webhook_secret.sql
--!include platform/redeliver_webhook.sql
--!include platform/replay_webhook_events.sql
--!include platform/claim_webhook_deliveries.sql
--!include platform/record_webhook_attempt.sql
--!include platform/sweep_webhook_deliveries.sql
--!include platform/events_after.sql
--!include messaging/wake_due_jobs.sql

-- Who writes which events.
--!include crm/tg_leads__events.sql
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

--!include platform/tg_webhook_endpoints__resume.sql
drop trigger if exists _900_resume on app_public.webhook_endpoints;
create trigger _900_resume after update of enabled on app_public.webhook_endpoints for each row
  when (new.enabled and not old.enabled)
  execute function app_private.tg_webhook_endpoints__resume();
