--! Previous: sha1:b3af469f992c224966f05a105acac2afb7d4eac4
--! Hash: sha1:2d28212202b2e8b2b378e3fec5b2db7ae05a04e0
--! Message: Email outbox, suppression list and signed one-click unsubscribe; owners notified of qualified leads by email; a per-tenant clock for time travel

-- Migration 000012: email. An email outbox ruled in SQL (rows first, claimed before the provider is
-- called, never resent blindly), a suppression list with a signed one-click unsubscribe link, owners
-- notified of qualified leads by email, and a controllable clock (app_hidden.clock_now) that the
-- outboxes and schedules read, so tests and demos can move time forward instead of sleeping.

drop table if exists app_public.email_messages, app_public.email_suppressions, app_private.local_provider_emails,
  app_private.clock_offsets, app_private.instance_secrets cascade;
alter table app_public.notifications drop column if exists email_message_id;
do $do$
declare
  f record;
begin
  for f in
    select p.oid::regprocedure as sig
    from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
    where (n.nspname, p.proname) in (('app_hidden', 'clock_now'),
      ('app_hidden', 'clock_to_real'),
      ('app_private', 'advance_clock'),
      ('app_private', 'wake_due_jobs'),
      ('app_private', 'is_email_suppressed'),
      ('app_private', 'enqueue_email_send'),
      ('app_private', 'queue_email'),
      ('app_private', 'tg_email_messages__guard_outbound'),
      ('app_private', 'tg_email_messages__enqueue_send'),
      ('app_private', 'tg_email_suppressions__cancel_pending'),
      ('app_private', 'claim_outbound_email'),
      ('app_private', 'record_email_sent'),
      ('app_private', 'record_email_failed'),
      ('app_private', 'release_email_for_retry'),
      ('app_private', 'settle_email'),
      ('app_private', 'sweep_email_outbox'),
      ('app_private', 'email_unsubscribe_token'),
      ('app_private', 'verify_unsubscribe_token'),
      ('app_private', 'unsubscribe_page'),
      ('app_private', 'unsubscribe_email'),
      ('app_public', 'queue_email'))
  loop
    execute pg_catalog.format('drop function %s cascade', f.sig);
  end loop;
end;
$do$;

--------------------------------------------------------------------------------
-- The clock
--------------------------------------------------------------------------------

create table app_private.clock_offsets (
  tenant_id uuid primary key,
  offset_by interval not null default interval '0',
  changed_at timestamptz not null default now(),
  constraint clock_offsets_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint clock_offsets_clock_must_never_run_backwards check (offset_by >= interval '0')
);
comment on table app_private.clock_offsets is $$The clock of the schedules and outboxes of a tenant. Without a row (production) app_hidden.clock_now(tenant) is now(). Tests and demos move one tenant forward with advance_clock instead of sleeping, leaving every other tenant on real time: every due time of the tenant (scheduled_for of texts and emails, nurture steps) is read against this clock, and graphile-worker jobs are placed at the matching real time.$$;
comment on column app_private.clock_offsets.tenant_id is 'The tenant whose clock this is.';
comment on column app_private.clock_offsets.offset_by is 'How far its clock is ahead of the real time (never negative: a clock does not run backwards).';
comment on column app_private.clock_offsets.changed_at is 'When the offset was last changed (real time).';

alter table app_private.clock_offsets enable row level security;
alter table app_private.clock_offsets force row level security;
create policy owner_all on app_private.clock_offsets for all to :DATABASE_OWNER using (true) with check (true);

create function app_hidden.clock_now(tenant_id uuid) returns timestamptz
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select pg_catalog.now() + coalesce((select c.offset_by from app_private.clock_offsets c where c.tenant_id = clock_now.tenant_id), interval '0')
$$;
comment on function app_hidden.clock_now(uuid) is 'The current time of the schedules and outboxes of a tenant: now() plus the offset of its clock (none in production). Stable: the same within a transaction, like now().';

create function app_hidden.clock_to_real(tenant_id uuid, at timestamptz) returns timestamptz
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select clock_to_real.at - coalesce((select c.offset_by from app_private.clock_offsets c where c.tenant_id = clock_to_real.tenant_id), interval '0')
$$;
comment on function app_hidden.clock_to_real(uuid, timestamptz) is 'The real time at which the clock of the tenant will show at: where a graphile-worker job (which runs on real time) must be placed for something due at that clock time.';

--------------------------------------------------------------------------------
-- Instance secrets (the key that signs unsubscribe links)
--------------------------------------------------------------------------------

create table app_private.instance_secrets (
  name text primary key,
  secret bytea not null default public.gen_random_bytes(32),
  created_at timestamptz not null default now(),
  constraint instance_secrets_secret_must_be_at_least_32_bytes check (pg_catalog.length(secret) >= 32)
);
comment on table app_private.instance_secrets is 'Random keys this database generated for itself, e.g. email_unsubscribe, which signs the unsubscribe links in emails. Never readable by the request role.';
comment on column app_private.instance_secrets.name is 'What the key is for.';
comment on column app_private.instance_secrets.secret is 'The key (at least 32 random bytes).';
comment on column app_private.instance_secrets.created_at is 'When it was generated.';
insert into app_private.instance_secrets (name) values ('email_unsubscribe');

alter table app_private.instance_secrets enable row level security;
alter table app_private.instance_secrets force row level security;
create policy owner_all on app_private.instance_secrets for all to :DATABASE_OWNER using (true) with check (true);

--------------------------------------------------------------------------------
-- Email suppression list and the email outbox
--------------------------------------------------------------------------------

create table app_public.email_suppressions (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  email public.citext not null,
  source text not null default 'manual',
  reason text,
  email_message_id uuid,
  added_by_user_id uuid default app_public.current_user_id(),
  added_at timestamptz not null default now(),
  constraint email_suppressions_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint email_suppressions_email_must_be_unique_per_tenant unique (tenant_id, email),
  constraint email_suppressions_email_must_be_valid check (app_hidden.is_valid_email(email::text)),
  constraint email_suppressions_source_must_be_known check (source in ('manual', 'api', 'import', 'unsubscribe_link', 'list_unsubscribe', 'bounce', 'complaint'))
);
comment on table app_public.email_suppressions is $$@behavior -update -delete
The tenant’s email suppression list. RULE: nothing but transactional email may be sent to an address on this list; the database refuses to queue it (SQLSTATE SB001) and cancels what was queued. The signed unsubscribe link of every marketing and nurture email adds the address here. Members may add addresses (source manual or api).$$;
comment on column app_public.email_suppressions.id is 'The entry’s id.';
comment on column app_public.email_suppressions.tenant_id is 'The tenant whose list this is.';
comment on column app_public.email_suppressions.email is 'The address that must not be emailed (case-insensitive).';
comment on column app_public.email_suppressions.source is 'How it got here: manual, api, import, unsubscribe_link (the link in an email), list_unsubscribe (the one-click button of the mail program), bounce or complaint.';
comment on column app_public.email_suppressions.reason is 'Why, in words.';
comment on column app_public.email_suppressions.email_message_id is 'The email whose unsubscribe link was used, when one was.';
comment on column app_public.email_suppressions.added_by_user_id is 'Who added it, if a user did.';
comment on column app_public.email_suppressions.added_at is 'When it was added: the time of the opt-out.';

create table app_public.email_messages (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  lead_id uuid,
  user_id uuid,
  purpose text not null,
  from_name text,
  from_email public.citext,
  reply_to public.citext,
  to_email public.citext not null,
  subject text not null,
  body_text text not null,
  body_html text,
  idempotency_key text,
  status text not null default 'queued',
  scheduled_for timestamptz not null default now(),
  attempts integer not null default 0,
  message_id_header text,
  provider_response text,
  error_code integer,
  error_message text,
  sending_at timestamptz,
  sent_at timestamptz,
  failed_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint email_messages_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint email_messages_id_must_be_unique_per_tenant unique (tenant_id, id),
  constraint email_messages_lead_must_exist foreign key (tenant_id, lead_id) references app_public.leads (tenant_id, id) on delete set null (lead_id),
  constraint email_messages_user_must_be_a_member foreign key (tenant_id, user_id) references app_public.memberships (tenant_id, user_id) on delete set null (user_id),
  constraint email_messages_idempotency_key_must_be_unique_per_tenant unique (tenant_id, idempotency_key),
  constraint email_messages_message_id_header_must_be_unique unique (message_id_header),
  constraint email_messages_purpose_must_be_known check (purpose in ('notification', 'transactional', 'marketing', 'nurture')),
  constraint email_messages_status_must_be_known check (status in ('queued', 'sending', 'sent', 'failed', 'canceled', 'uncertain')),
  constraint email_messages_to_email_must_be_valid check (app_hidden.is_valid_email(to_email::text)),
  constraint email_messages_from_email_must_be_valid check (from_email is null or app_hidden.is_valid_email(from_email::text)),
  constraint email_messages_reply_to_must_be_valid check (reply_to is null or app_hidden.is_valid_email(reply_to::text)),
  constraint email_messages_subject_must_be_one_line_of_at_most_998_characters check (pg_catalog.length(subject) between 1 and 998 and subject !~ '[\r\n]'),
  constraint email_messages_body_must_be_at_most_200000_characters check (pg_catalog.length(body_text) between 1 and 200000 and pg_catalog.length(coalesce(body_html, '')) <= 200000),
  constraint email_messages_attempts_must_not_be_negative check (attempts >= 0)
);
create index email_messages_by_lead on app_public.email_messages (tenant_id, lead_id, created_at) where lead_id is not null;
create index email_messages_by_recipient on app_public.email_messages (tenant_id, to_email, created_at);
create index email_messages_pending on app_public.email_messages (status, scheduled_for) where status in ('queued', 'sending');
comment on table app_public.email_messages is $$@behavior -insert -update -delete
The email outbox: every email Switchboard sends is a row here before any server sees it (queue one with queueEmail). Status: queued (waiting for scheduled_for) → sending (handed to the mail server) → sent (the server accepted it), or failed (refused for good), canceled (the address unsubscribed meanwhile), uncertain (the worker lost the answer of a server that cannot be asked afterwards; never resent automatically, so nobody gets an email twice). A mail server’s acceptance is the last thing Switchboard can know: there is no delivered state for email.$$;
comment on column app_public.email_messages.id is 'The email’s id (also the left part of its Message-ID header).';
comment on column app_public.email_messages.tenant_id is 'The tenant that sends it.';
comment on column app_public.email_messages.lead_id is 'The lead it goes to, when it goes to a lead.';
comment on column app_public.email_messages.user_id is 'The member it goes to, for notifications.';
comment on column app_public.email_messages.purpose is 'notification (to a member), transactional, marketing or nurture. Marketing and nurture emails carry an unsubscribe link; every purpose but transactional respects the suppression list.';
comment on column app_public.email_messages.from_name is 'The sender name shown (default: the business name).';
comment on column app_public.email_messages.from_email is 'The sender address; null means the server default (EMAIL_FROM).';
comment on column app_public.email_messages.reply_to is 'Where replies go, when not to the sender.';
comment on column app_public.email_messages.to_email is 'The recipient.';
comment on column app_public.email_messages.subject is 'The subject line (one line, at most 998 characters).';
comment on column app_public.email_messages.body_text is 'The plain-text body (the unsubscribe footer is added when it is sent).';
comment on column app_public.email_messages.body_html is 'The HTML body, when there is one.';
comment on column app_public.email_messages.idempotency_key is 'The caller’s key: queuing again with the same key returns this email instead of a second one.';
comment on column app_public.email_messages.status is 'queued, sending, sent, failed, canceled or uncertain (see the table).';
comment on column app_public.email_messages.scheduled_for is 'When it may go (by the clock of the tenant, app_hidden.clock_now).';
comment on column app_public.email_messages.attempts is 'How many times it was handed to the mail server.';
comment on column app_public.email_messages.message_id_header is 'The Message-ID header it was sent with, e.g. <id@example.com>.';
comment on column app_public.email_messages.provider_response is 'The final answer of the mail server, e.g. 250 2.0.0 Ok: queued.';
comment on column app_public.email_messages.error_code is 'The SMTP reply code of a refusal (e.g. 550).';
comment on column app_public.email_messages.error_message is 'Why it failed, was canceled, or is uncertain, in words.';
comment on column app_public.email_messages.sending_at is 'When it was last handed to the mail server.';
comment on column app_public.email_messages.sent_at is 'When the mail server accepted it.';
comment on column app_public.email_messages.failed_at is 'When it failed or was canceled.';
comment on column app_public.email_messages.created_at is 'When it was queued.';
comment on column app_public.email_messages.updated_at is 'When it last changed.';

alter table app_public.email_suppressions add constraint email_suppressions_email_message_must_exist
  foreign key (tenant_id, email_message_id) references app_public.email_messages (tenant_id, id) on delete set null (email_message_id);

create table app_private.local_provider_emails (
  message_id text primary key,
  to_email text not null,
  from_email text not null,
  subject text not null,
  raw text not null,
  created_at timestamptz not null default now()
);
comment on table app_private.local_provider_emails is 'What the local email catcher (used when no SMTP server is configured) received: the full message as a mail server would have, nothing leaves the machine.';
comment on column app_private.local_provider_emails.message_id is 'The Message-ID header.';
comment on column app_private.local_provider_emails.to_email is 'Recipient.';
comment on column app_private.local_provider_emails.from_email is 'Sender address.';
comment on column app_private.local_provider_emails.subject is 'Subject line.';
comment on column app_private.local_provider_emails.raw is 'The whole RFC 5322 message (headers and encoded body).';
comment on column app_private.local_provider_emails.created_at is 'When it was caught.';

alter table app_public.notifications add column email_message_id uuid,
  add constraint notifications_email_message_must_exist foreign key (tenant_id, email_message_id)
    references app_public.email_messages (tenant_id, id) on delete set null (email_message_id);
comment on column app_public.notifications.email_message_id is 'The email that carried it, when one was sent.';

alter table app_public.email_suppressions enable row level security;
alter table app_public.email_suppressions force row level security;
create policy owner_all on app_public.email_suppressions for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.email_suppressions for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
create policy insert_current_tenant on app_public.email_suppressions for insert to :DATABASE_VISITOR
  with check (tenant_id = (select app_public.current_tenant_id()) and source in ('manual', 'api')
    and added_by_user_id is not distinct from (select app_public.current_user_id()));
grant select on app_public.email_suppressions to :DATABASE_VISITOR;
grant insert (tenant_id, email, source, reason) on app_public.email_suppressions to :DATABASE_VISITOR;

alter table app_public.email_messages enable row level security;
alter table app_public.email_messages force row level security;
create policy owner_all on app_public.email_messages for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.email_messages for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.email_messages to :DATABASE_VISITOR;

alter table app_private.local_provider_emails enable row level security;
alter table app_private.local_provider_emails force row level security;
create policy owner_all on app_private.local_provider_emails for all to :DATABASE_OWNER using (true) with check (true);

create trigger _100_timestamps before insert or update on app_public.email_messages
  for each row execute function app_private.tg__timestamps();

--------------------------------------------------------------------------------
-- Queuing
--------------------------------------------------------------------------------

create function app_private.is_email_suppressed(tenant_id uuid, email text) returns boolean
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select exists (
    select 1 from app_public.email_suppressions s
    where s.tenant_id = is_email_suppressed.tenant_id and s.email = is_email_suppressed.email::public.citext
  )
$$;
comment on function app_private.is_email_suppressed(uuid, text) is 'True when the address is on the email suppression list of the tenant (case-insensitive).';

create function app_private.enqueue_email_send(email_id uuid, run_at timestamptz default null) returns void
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform graphile_worker.add_job('email__send', pg_catalog.json_build_object('email_id', enqueue_email_send.email_id),
    run_at => case when enqueue_email_send.run_at is null then null
      else app_hidden.clock_to_real((select e.tenant_id from app_public.email_messages e where e.id = enqueue_email_send.email_id), enqueue_email_send.run_at) end,
    job_key => 'email_send:' || enqueue_email_send.email_id, max_attempts => 10);
end;
$$;
comment on function app_private.enqueue_email_send(uuid, timestamptz) is 'Enqueues (or moves) the email__send job of one outbox email, keyed email_send:<id>; run_at is a time on the clock of the tenant (clock_now), null means now. A second job for an email is harmless: only one claim succeeds.';

create function app_private.queue_email(tenant_id uuid, to_email text, subject text, body_text text, purpose text,
    lead_id uuid default null, user_id uuid default null, idempotency_key text default null, body_html text default null,
    scheduled_for timestamptz default null, from_name text default null) returns app_public.email_messages
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_email app_public.email_messages;
  v_subject text := pg_catalog.btrim(queue_email.subject);
begin
  if queue_email.to_email is null or not app_hidden.is_valid_email(queue_email.to_email) then
    raise exception 'Cannot email %: not a valid email address', coalesce(pg_catalog.quote_literal(queue_email.to_email), 'an empty address')
      using errcode = '22023';
  end if;
  if v_subject is null or v_subject = '' then
    raise exception 'An email needs a subject' using errcode = '22023';
  end if;
  if v_subject ~ '[\r\n]' or pg_catalog.length(v_subject) > 998 then
    raise exception 'An email subject must be one line of at most 998 characters' using errcode = '22023';
  end if;
  if queue_email.body_text is null or pg_catalog.btrim(queue_email.body_text) = '' then
    raise exception 'An email needs a body' using errcode = '22023';
  end if;
  if pg_catalog.length(queue_email.body_text) > 200000 or pg_catalog.length(coalesce(queue_email.body_html, '')) > 200000 then
    raise exception 'An email body can be at most 200000 characters' using errcode = '22023';
  end if;
  if queue_email.purpose is null or queue_email.purpose not in ('notification', 'transactional', 'marketing', 'nurture') then
    raise exception 'purpose must be notification, transactional, marketing or nurture, got %', coalesce(pg_catalog.quote_literal(queue_email.purpose), 'nothing')
      using errcode = '22023';
  end if;
  if queue_email.idempotency_key is not null then
    select e.* into v_email from app_public.email_messages e
    where e.tenant_id = queue_email.tenant_id and e.idempotency_key = queue_email.idempotency_key;
    if found then
      return v_email;
    end if;
  end if;
  insert into app_public.email_messages (tenant_id, lead_id, user_id, purpose, from_name, to_email, subject, body_text, body_html,
    idempotency_key, scheduled_for)
  values (queue_email.tenant_id, queue_email.lead_id, queue_email.user_id, queue_email.purpose,
    coalesce(queue_email.from_name, (select t.business_name from app_public.tenants t where t.id = queue_email.tenant_id)),
    queue_email.to_email, v_subject, queue_email.body_text, queue_email.body_html, queue_email.idempotency_key,
    coalesce(queue_email.scheduled_for, app_hidden.clock_now(queue_email.tenant_id)))
  on conflict on constraint email_messages_idempotency_key_must_be_unique_per_tenant do nothing
  returning * into v_email;
  if v_email.id is null then
    -- The same key was queued by a concurrent transaction: return its email.
    select e.* into v_email from app_public.email_messages e
    where e.tenant_id = queue_email.tenant_id and e.idempotency_key = queue_email.idempotency_key;
  end if;
  return v_email;
end;
$$;
comment on function app_private.queue_email(uuid, text, text, text, text, uuid, uuid, text, text, timestamptz, text) is $$Writes one email to the outbox (status queued) and enqueues its email__send job, in the caller’s transaction. The same idempotency_key returns the first email instead of queuing again. The guard trigger refuses suppressed addresses (SB001). Errors: 22023 an invalid address, an empty or multi-line subject, an empty body, a body over 200000 characters, an unknown purpose.$$;

create function app_private.tg_email_messages__guard_outbound() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if NEW.purpose <> 'transactional' and app_private.is_email_suppressed(NEW.tenant_id, NEW.to_email::text) then
    raise exception 'Not sent: % unsubscribed or is on the email suppression list of this business, so nothing may be emailed to it', NEW.to_email
      using errcode = 'SB001';
  end if;
  if NEW.purpose in ('marketing', 'nurture') and NEW.lead_id is not null
     and exists (select 1 from app_public.leads l where l.tenant_id = NEW.tenant_id and l.id = NEW.lead_id and l.status = 'dnc') then
    raise exception 'Not sent: this lead is marked do-not-contact' using errcode = 'SB001';
  end if;
  return NEW;
end;
$$;
comment on function app_private.tg_email_messages__guard_outbound() is $$Trigger (_200_guard_outbound, before insert on email_messages). THE RULE of the suppression list, enforced where every email is written: an address on it gets nothing but transactional email (SQLSTATE SB001), and a lead marked do-not-contact gets no marketing or nurture email.$$;

create trigger _200_guard_outbound before insert on app_public.email_messages
  for each row execute function app_private.tg_email_messages__guard_outbound();

create function app_private.tg_email_messages__enqueue_send() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.enqueue_email_send(NEW.id, NEW.scheduled_for);
  return null;
end;
$$;
comment on function app_private.tg_email_messages__enqueue_send() is 'Trigger (_900_enqueue_send, after insert of queued emails): enqueues the email__send job at scheduled_for, keyed by the email (job key email_send:<id>).';

create trigger _900_enqueue_send after insert on app_public.email_messages
  for each row when (NEW.status = 'queued') execute function app_private.tg_email_messages__enqueue_send();

create function app_private.tg_email_suppressions__cancel_pending() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  update app_public.email_messages e
  set status = 'canceled', failed_at = now(), error_message = 'Canceled: the address unsubscribed or was suppressed before it went'
  where e.tenant_id = NEW.tenant_id and e.to_email = NEW.email and e.status = 'queued' and e.purpose <> 'transactional';
  return null;
end;
$$;
comment on function app_private.tg_email_suppressions__cancel_pending() is 'Trigger (_500_cancel_pending, after insert on email_suppressions): every queued email to the address, but transactional ones, is canceled at once. An email already handed to the mail server cannot be called back.';

create trigger _500_cancel_pending after insert on app_public.email_suppressions
  for each row execute function app_private.tg_email_suppressions__cancel_pending();

create function app_public.queue_email(lead_id uuid, subject text, body text, purpose text default 'marketing',
    idempotency_key text default null, body_html text default null) returns app_public.email_messages
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('agent', 'send emails');
  v_lead app_public.leads;
begin
  if queue_email.purpose is null or queue_email.purpose not in ('marketing', 'transactional') then
    raise exception 'purpose must be marketing or transactional, got %', coalesce(pg_catalog.quote_literal(queue_email.purpose), 'nothing')
      using errcode = '22023';
  end if;
  select l.* into v_lead from app_public.leads l
  where l.tenant_id = v_tenant_id and l.id = queue_email.lead_id and l.deleted_at is null;
  if not found then
    raise exception 'No lead % in this tenant', queue_email.lead_id using errcode = 'P0002';
  end if;
  if v_lead.email is null then
    raise exception 'This lead has no email address' using errcode = '22023';
  end if;
  return app_private.queue_email(v_tenant_id, v_lead.email::text, queue_email.subject, queue_email.body, queue_email.purpose,
    v_lead.id, null, queue_email.idempotency_key, queue_email.body_html);
end;
$$;
comment on function app_public.queue_email(uuid, text, text, text, text, text) is $$Queues an email to a lead (any member). purpose marketing (default) carries a one-click unsubscribe link and respects the suppression list; transactional is for what the lead asked for (a quote, a booking) and is sent even to a suppressed address. idempotency_key (optional) makes a retried call return the first email. Errors: SB001 the address unsubscribed or the lead is marked do-not-contact; 22023 no address, an empty or multi-line subject, an empty body, an unknown purpose; P0002 no such lead; 42501 not a member.$$;
grant execute on function app_public.queue_email(uuid, text, text, text, text, text) to :DATABASE_VISITOR;

--------------------------------------------------------------------------------
-- Sending (the email__send task) and settling
--------------------------------------------------------------------------------

create function app_private.email_unsubscribe_token(email_message_id uuid) returns text
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select email_unsubscribe_token.email_message_id::text || '.'
    || pg_catalog.rtrim(pg_catalog.translate(pg_catalog.encode(
         public.hmac(pg_catalog.convert_to(email_unsubscribe_token.email_message_id::text, 'UTF8'), s.secret, 'sha256'), 'base64'),
         '+/', '-_'), '=')
  from app_private.instance_secrets s where s.name = 'email_unsubscribe'
$$;
comment on function app_private.email_unsubscribe_token(uuid) is 'The token of the unsubscribe link of one email: its id and an HMAC-SHA256 of it with the instance key email_unsubscribe (base64url), so a link cannot be forged or altered.';

create function app_private.claim_outbound_email(email_id uuid, public_url text, message_id_domain text)
  returns table (id uuid, message_id text, from_name text, from_email text, reply_to text, to_email text, subject text,
    body_text text, body_html text, unsubscribe_url text)
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_email app_public.email_messages;
  v_business text;
  v_url text;
  v_text text;
  v_html text;
begin
  select e.* into v_email from app_public.email_messages e where e.id = claim_outbound_email.email_id for update;
  if not found or v_email.status <> 'queued' then
    return;
  end if;
  if v_email.scheduled_for > app_hidden.clock_now(v_email.tenant_id) + interval '1 second' then
    perform app_private.enqueue_email_send(v_email.id, v_email.scheduled_for);
    return;
  end if;
  -- Consent is checked again at the last moment: the address may have unsubscribed since queuing.
  if v_email.purpose <> 'transactional' and app_private.is_email_suppressed(v_email.tenant_id, v_email.to_email::text) then
    update app_public.email_messages e
    set status = 'canceled', failed_at = now(), error_message = 'Canceled: the address is on the suppression list (checked again before sending)'
    where e.id = v_email.id;
    return;
  end if;
  update app_public.email_messages e
  set status = 'sending', sending_at = now(), attempts = e.attempts + 1,
      message_id_header = coalesce(e.message_id_header,
        '<' || e.id || '@' || coalesce(nullif(pg_catalog.lower(pg_catalog.btrim(claim_outbound_email.message_id_domain)), ''), 'switchboard.invalid') || '>')
  where e.id = v_email.id
  returning e.* into v_email;

  v_text := v_email.body_text;
  v_html := v_email.body_html;
  if v_email.purpose in ('marketing', 'nurture') then
    select t.business_name into v_business from app_public.tenants t where t.id = v_email.tenant_id;
    v_url := pg_catalog.rtrim(claim_outbound_email.public_url, '/') || '/email/unsubscribe/' || app_private.email_unsubscribe_token(v_email.id);
    v_text := v_text || E'\n\n--\n' || coalesce(v_business, '') || E'\nYou receive this email because you contacted us. To receive no more, unsubscribe: ' || v_url || E'\n';
    if v_html is not null then
      v_html := v_html || '<p style="font-size:12px;color:#666">' || pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
          coalesce(v_business, ''), '&', '&amp;'), '<', '&lt;'), '>', '&gt;')
        || '<br>You receive this email because you contacted us. <a href="' || v_url || '">Unsubscribe</a></p>';
    end if;
  end if;
  return query select v_email.id, v_email.message_id_header, v_email.from_name, v_email.from_email::text, v_email.reply_to::text,
    v_email.to_email::text, v_email.subject, v_text, v_html, v_url;
end;
$$;
comment on function app_private.claim_outbound_email(uuid, text, text) is $$Step 1 of sending (email__send), committed before the mail server is called: a queued email due by the clock becomes sending, gets its Message-ID (<id@message_id_domain>), and is returned ready to send: marketing and nurture emails with the footer and the signed one-click unsubscribe link under public_url. No row when it is not queued any more, not due yet (its job is moved), or its address unsubscribed since (canceled).$$;

create function app_private.record_email_sent(email_id uuid, message_id text, response text) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  update app_public.email_messages e
  set status = 'sent', sent_at = now(), provider_response = pg_catalog.left(record_email_sent.response, 1000),
      message_id_header = coalesce(record_email_sent.message_id, e.message_id_header), error_message = null
  where e.id = record_email_sent.email_id and e.status in ('sending', 'uncertain');
  return found;
end;
$$;
comment on function app_private.record_email_sent(uuid, text, text) is 'Step 2 of sending when the mail server accepted the email: sent, with its answer. Also settles an email marked uncertain whose answer arrives late.';

create function app_private.record_email_failed(email_id uuid, error_code integer, error_message text) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  update app_public.email_messages e
  set status = 'failed', failed_at = now(), error_code = record_email_failed.error_code,
      error_message = pg_catalog.left(record_email_failed.error_message, 1000)
  where e.id = record_email_failed.email_id and e.status = 'sending';
  return found;
end;
$$;
comment on function app_private.record_email_failed(uuid, integer, text) is 'Step 2 of sending when the mail server refused the email for good (a 5xx answer, e.g. 550 unknown mailbox): failed, with the code and the reason.';

create function app_private.release_email_for_retry(email_id uuid, error_message text, delay_seconds integer)
  returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_at timestamptz := app_hidden.clock_now((select e.tenant_id from app_public.email_messages e where e.id = release_email_for_retry.email_id))
    + pg_catalog.make_interval(secs => greatest(coalesce(release_email_for_retry.delay_seconds, 60), 1));
begin
  update app_public.email_messages e
  set status = 'queued', scheduled_for = v_at, error_message = pg_catalog.left(release_email_for_retry.error_message, 1000)
  where e.id = release_email_for_retry.email_id and e.status = 'sending';
  if not found then
    return false;
  end if;
  perform app_private.enqueue_email_send(release_email_for_retry.email_id, v_at);
  return true;
end;
$$;
comment on function app_private.release_email_for_retry(uuid, text, integer) is 'Step 2 of sending when the mail server certainly did not take the email (a 4xx answer, or no connection): back to queued, tried again after delay_seconds.';

create function app_private.settle_email(email_id uuid, found_at_provider boolean, note text default null) returns text
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_email app_public.email_messages;
begin
  select e.* into v_email from app_public.email_messages e where e.id = settle_email.email_id for update;
  if not found or v_email.status <> 'sending' then
    return coalesce(v_email.status, 'missing');
  end if;
  if settle_email.found_at_provider then
    update app_public.email_messages e
    set status = 'sent', sent_at = now(), provider_response = coalesce(settle_email.note, 'found at the provider after the worker lost its answer')
    where e.id = v_email.id;
    return 'sent';
  elsif not settle_email.found_at_provider then
    update app_public.email_messages e
    set status = 'queued', scheduled_for = app_hidden.clock_now(v_email.tenant_id),
        error_message = 'The sending worker stopped before the provider took it (the provider has no such email): queued again'
    where e.id = v_email.id;
    perform app_private.enqueue_email_send(v_email.id);
    return 'queued';
  end if;
  update app_public.email_messages e
  set status = 'uncertain',
      error_message = coalesce(settle_email.note, 'The mail server may have accepted it before the answer was lost, and it cannot be asked: not resent, so that nobody gets it twice')
  where e.id = v_email.id;
  return 'uncertain';
end;
$$;
comment on function app_private.settle_email(uuid, boolean, text) is $$Settles an email left in sending (its worker stopped, or the answer of the server was lost) from what the provider can tell, never blindly: found true → sent; found false (the provider certainly has no such email) → queued again for its first send; found null (SMTP cannot be asked) → uncertain, never resent automatically. Returns the resulting status.$$;

create function app_private.sweep_email_outbox(grace interval default interval '10 minutes', out requeued integer, out to_settle integer)
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_email record;
begin
  requeued := 0;
  to_settle := 0;
  for v_email in
    select e.id from app_public.email_messages e
    where e.status = 'queued' and e.scheduled_for <= app_hidden.clock_now(e.tenant_id) - sweep_email_outbox.grace
    order by e.scheduled_for
    limit 5000
  loop
    perform app_private.enqueue_email_send(v_email.id);
    requeued := requeued + 1;
  end loop;
  for v_email in
    select e.id from app_public.email_messages e
    where e.status = 'sending' and e.sending_at <= now() - sweep_email_outbox.grace
    order by e.sending_at
    limit 5000
  loop
    perform graphile_worker.add_job('email__reconcile', pg_catalog.json_build_object('email_id', v_email.id),
      job_key => 'email_reconcile:' || v_email.id, max_attempts => 10);
    to_settle := to_settle + 1;
  end loop;
end;
$$;
comment on function app_private.sweep_email_outbox(interval) is $$Finds emails a stopped worker left behind (run every minute by the email__sweep cron task): queued emails overdue by more than grace get their email__send job again (only one claim succeeds); emails in sending for more than grace get an email__reconcile job, which asks the provider before anything is sent again. The grace must exceed the SMTP timeout.$$;

create function app_private.wake_due_jobs(tenant_id uuid) returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_id uuid;
  v_count integer := 0;
begin
  for v_id in
    select e.id from app_public.email_messages e
    where e.tenant_id = wake_due_jobs.tenant_id and e.status = 'queued' and e.scheduled_for <= app_hidden.clock_now(wake_due_jobs.tenant_id)
  loop
    perform app_private.enqueue_email_send(v_id);
    v_count := v_count + 1;
  end loop;
  return v_count;
end;
$$;
comment on function app_private.wake_due_jobs(uuid) is 'After the clock of a tenant moved forward: everything of the tenant now due by its clock (queued emails) gets its job at once instead of at the real time it was placed at. Returns how many jobs were moved.';

create function app_private.advance_clock(tenant_id uuid, by_interval interval) returns timestamptz
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if advance_clock.by_interval is null or advance_clock.by_interval <= interval '0' or advance_clock.by_interval > interval '400 days' then
    raise exception 'The clock only moves forward, by more than nothing and at most 400 days at a time' using errcode = '22023';
  end if;
  if not exists (select 1 from app_public.tenants t where t.id = advance_clock.tenant_id) then
    raise exception 'No tenant %', advance_clock.tenant_id using errcode = 'P0002';
  end if;
  insert into app_private.clock_offsets as c (tenant_id, offset_by) values (advance_clock.tenant_id, advance_clock.by_interval)
  on conflict on constraint clock_offsets_pkey do update set offset_by = c.offset_by + excluded.offset_by, changed_at = now();
  perform app_private.wake_due_jobs(advance_clock.tenant_id);
  return app_hidden.clock_now(advance_clock.tenant_id);
end;
$$;
comment on function app_private.advance_clock(uuid, interval) is 'Moves the clock of one tenant forward (tests and demos: time travel without sleeping, other tenants stay on real time) and wakes what became due. Owner role only. Returns the new clock time of the tenant. Errors: 22023 not forward, or more than 400 days; P0002 no such tenant.';

--------------------------------------------------------------------------------
-- One-click unsubscribe (the /email/unsubscribe/<token> endpoint)
--------------------------------------------------------------------------------

create function app_private.verify_unsubscribe_token(token text) returns uuid
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_id uuid;
begin
  if verify_unsubscribe_token.token is null
     or verify_unsubscribe_token.token !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.[A-Za-z0-9_-]{43}$' then
    raise exception 'This unsubscribe link is not complete: copy the whole link from the email' using errcode = '22023';
  end if;
  v_id := pg_catalog.split_part(verify_unsubscribe_token.token, '.', 1)::uuid;
  if app_private.email_unsubscribe_token(v_id) is distinct from verify_unsubscribe_token.token then
    raise exception 'This unsubscribe link is not valid: copy the whole link from the email' using errcode = '22023';
  end if;
  if not exists (select 1 from app_public.email_messages e where e.id = v_id) then
    raise exception 'This unsubscribe link belongs to an email that no longer exists' using errcode = 'P0002';
  end if;
  return v_id;
end;
$$;
comment on function app_private.verify_unsubscribe_token(text) is 'The email id of a valid unsubscribe token. Errors: 22023 a cut or altered token; P0002 the email no longer exists.';

create function app_private.unsubscribe_page(token text)
  returns table (email_message_id uuid, tenant_id uuid, business_name text, email text, unsubscribed boolean)
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select e.id, e.tenant_id, t.business_name, e.to_email::text, app_private.is_email_suppressed(e.tenant_id, e.to_email::text)
  from app_public.email_messages e
  join app_public.tenants t on t.id = e.tenant_id
  where e.id = app_private.verify_unsubscribe_token(unsubscribe_page.token)
$$;
comment on function app_private.unsubscribe_page(text) is 'What the unsubscribe page shows for a token (business, address, whether it is already unsubscribed); changes nothing, so that link scanners opening it do not unsubscribe anyone. Errors as verify_unsubscribe_token.';

create function app_private.unsubscribe_email(token text, source text)
  returns table (email_message_id uuid, tenant_id uuid, business_name text, email text, unsubscribed boolean)
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_id uuid := app_private.verify_unsubscribe_token(unsubscribe_email.token);
  v_email app_public.email_messages;
begin
  if unsubscribe_email.source is null or unsubscribe_email.source not in ('unsubscribe_link', 'list_unsubscribe') then
    raise exception 'source must be unsubscribe_link or list_unsubscribe' using errcode = '22023';
  end if;
  select e.* into v_email from app_public.email_messages e where e.id = v_id;
  insert into app_public.email_suppressions (tenant_id, email, source, reason, email_message_id, added_by_user_id)
  values (v_email.tenant_id, v_email.to_email, unsubscribe_email.source,
    case unsubscribe_email.source when 'list_unsubscribe' then 'One-click unsubscribe from the mail program'
      else 'Unsubscribe link in an email' end,
    v_email.id, null)
  on conflict on constraint email_suppressions_email_must_be_unique_per_tenant do nothing;
  return query select * from app_private.unsubscribe_page(unsubscribe_email.token);
end;
$$;
comment on function app_private.unsubscribe_email(text, text) is $$Records the opt-out of a signed unsubscribe link (POST of the page button, source unsubscribe_link, or RFC 8058 one-click from the mail program, source list_unsubscribe): the address joins the tenant’s suppression list with the time and source, and everything queued to it is canceled. Idempotent: a second use changes nothing. Errors as verify_unsubscribe_token; 22023 an unknown source.$$;

--------------------------------------------------------------------------------
-- Owners hear of qualified leads by email too
--------------------------------------------------------------------------------

create or replace function app_private.qualify_conversation_lead(conversation_id uuid) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_conv app_public.conversations;
  v_lead app_public.leads;
  v_user uuid;
  v_prefs app_public.user_preferences;
  v_phone text;
  v_address text;
  v_sms app_public.messages;
  v_email app_public.email_messages;
  v_title text;
  v_text text;
begin
  select c.* into v_conv from app_public.conversations c where c.id = qualify_conversation_lead.conversation_id for update;
  if not found or v_conv.outcome is not null or v_conv.lead_id is null then
    return false;
  end if;
  select l.* into v_lead from app_public.leads l where l.tenant_id = v_conv.tenant_id and l.id = v_conv.lead_id for update;
  if v_lead.deleted_at is not null then
    return false;
  end if;
  -- Enough to act on: what is wrong, where, and how urgent (an emergency needs no address first).
  if not ((v_lead.problem_description is not null and v_lead.address is not null and v_lead.ai_analysis ? 'urgency')
          or v_lead.urgency = 'emergency') then
    return false;
  end if;
  update app_public.conversations c set outcome = 'qualified' where c.id = v_conv.id;
  if v_lead.status in ('new', 'contacted', 'nurturing', 'cold') then
    update app_public.leads l set status = 'qualified' where l.id = v_lead.id;
  end if;
  perform app_private.route_lead(v_conv.tenant_id, v_lead.id, 'new_lead');

  v_user := app_private.takeover_user_id(v_conv.tenant_id, v_lead.id);
  if v_user is null then
    return true;
  end if;
  v_title := case when v_lead.urgency = 'emergency' then 'Emergency lead' else 'Qualified lead' end;
  v_text := pg_catalog.format('New %s lead from %s: %s%s', case when v_lead.urgency = 'emergency' then 'EMERGENCY' else 'qualified' end,
    v_lead.phone, coalesce(v_lead.job_type || ', ', ''), pg_catalog.left(coalesce(v_lead.problem_description, ''), 160))
    || coalesce(' at ' || v_lead.address, '');
  select p.* into v_prefs from app_public.user_preferences p where p.user_id = v_user;
  select nullif(pr.phone_number, '') into v_phone from app_public.user_profiles pr where pr.tenant_id = v_conv.tenant_id and pr.user_id = v_user;
  if coalesce(v_prefs.notification_sms, true) and v_phone ~ '^\+[1-9][0-9]{6,14}$' then
    begin
      v_sms := app_private.queue_message(v_conv.tenant_id, v_phone, v_conv.business_phone, pg_catalog.left(v_text, 320),
        'notification', 'system', null, null, 'lead_qualified:' || v_lead.id || ':' || v_user);
    exception when sqlstate 'SB001' then
      v_sms := null;
    end;
  end if;
  if coalesce(v_prefs.notification_email, true) then
    select u.email::text into v_address from app_public.users u where u.id = v_user;
    begin
      v_email := app_private.queue_email(v_conv.tenant_id, v_address, v_title || ': ' || coalesce(v_lead.job_type, 'new request') || ' from ' || v_lead.phone,
        v_text || E'\n\nThe conversation so far is in Switchboard (conversation ' || v_conv.id || ', lead ' || v_lead.id || ').',
        'notification', v_lead.id, v_user, 'lead_qualified_email:' || v_lead.id || ':' || v_user);
    exception when sqlstate 'SB001' then
      v_email := null;
    end;
  end if;
  insert into app_public.notifications (tenant_id, user_id, kind, title, body, lead_id, conversation_id, sms_message_id, email_message_id)
  values (v_conv.tenant_id, v_user, 'lead_qualified', v_title, v_text, v_lead.id, v_conv.id, v_sms.id, v_email.id)
  on conflict on constraint notifications_one_per_kind_and_lead do nothing;
  return true;
end;
$$;
comment on function app_private.qualify_conversation_lead(uuid) is $$Once the conversation has told what is wrong, where and how urgent (or that it is an emergency): the conversation outcome becomes qualified, the lead becomes qualified and is routed with route_lead, and the person who owns it is notified according to their preferences: always in the app (notifications), by text when notification_sms is on and their profile has an E.164 phone, by email (to their login address) when notification_email is on. Happens once per conversation. Returns whether it happened now.$$;

comment on table app_public.notifications is $$@behavior -insert -delete
Messages for people of the business, e.g. a lead the AI assistant qualified. Always shown in the app (this table); also texted to the user when their preferences say notification_sms and their profile has a phone number, and emailed when they say notification_email. You see your own; mark one read by setting read_at.$$;
