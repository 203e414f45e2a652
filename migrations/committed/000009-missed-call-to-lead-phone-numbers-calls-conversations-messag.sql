--! Previous: sha1:66fef3ee6aef760b3dd712f95b76425e37c3e9fc
--! Hash: sha1:549e33d663211c79d502b31d890a08366d8dc20e
--! Message: missed call to lead: phone numbers, calls, conversations, messages outbox with DNC guard, quiet hours and caps, webhooks in SQL, opt-out, AI takeover, provisioning

--------------------------------------------------------------------------------
-- Missed call to lead (issue 5, part 2): telephony data model, the SMS outbox and its guard,
-- call and message webhooks as SQL functions, opt-out handling, conversations and the AI takeover.
--
--   phone_numbers, messaging_services   Twilio numbers of the tenant (provisioning lifecycle)
--   calls                               one row per Twilio CallSid, status forward-only
--   conversations                       one active SMS thread per caller and business number
--   messages                            inbound texts and the outbound outbox (idempotency key)
--   sms_consent_events                  every opt-out / opt-in with its source and time
--
-- The webhooks (src/webhooks) and the worker tasks call the app_private functions here as the
-- owner role; API clients use the app_public ones. Idempotent: drops what it creates.
--------------------------------------------------------------------------------

drop table if exists app_public.sms_consent_events, app_public.messages, app_public.conversations,
  app_public.calls, app_public.messaging_services, app_public.phone_numbers,
  app_private.local_provider_messages cascade;
-- Every function of this file, whatever its arguments (they may change while it is the current migration).
do $do$
declare
  f record;
begin
  for f in
    select p.oid::regprocedure as sig
    from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
    where (n.nspname, p.proname) in (('app_hidden', 'message_status_rank'),
      ('app_hidden', 'call_status_rank'),
      ('app_hidden', 'fill_sms_template'),
      ('app_private', 'tg_messages__guard_outbound'),
      ('app_private', 'tg_messages__count_in_conversation'),
      ('app_private', 'tg_messages__enqueue_send'),
      ('app_private', 'number_owner'),
      ('app_private', 'caller_lead'),
      ('app_private', 'caller_conversation'),
      ('app_private', 'queue_message'),
      ('app_private', 'record_inbound_call'),
      ('app_private', 'record_call_status'),
      ('app_private', 'process_missed_call'),
      ('app_private', 'record_inbound_message'),
      ('app_private', 'record_opt_out'),
      ('app_private', 'record_opt_in'),
      ('app_private', 'apply_message_status'),
      ('app_private', 'claim_outbound_message'),
      ('app_private', 'record_message_sent'),
      ('app_private', 'record_message_failed'),
      ('app_private', 'release_message_for_retry'),
      ('app_private', 'reconcile_message'),
      ('app_private', 'sweep_outbox'),
      ('app_public', 'send_conversation_reply'),
      ('app_public', 'queue_sms'),
      ('app_public', 'request_phone_number'),
      ('app_private', 'complete_phone_number_provisioning'),
      ('app_private', 'fail_phone_number_provisioning'),
      ('app_private', 'takeover_user_id'),
      ('app_private', 'ai_takeover'),
      ('app_private', 'ai_turn_context'),
      ('app_private', 'record_ai_reply'),
      ('app_private', 'qualify_conversation_lead'),
      ('app_private', 'tg_messages__enqueue_send'))
  loop
    execute pg_catalog.format('drop function %s cascade', f.sig);
  end loop;
end;
$do$;
drop type if exists app_public.inbound_call_answer cascade;
drop table if exists app_public.notifications cascade;
drop index if exists app_public.tracking_numbers_active_phone_must_be_unique;
alter table app_public.business_settings
  drop column if exists forward_to_phone,
  drop column if exists ring_timeout_seconds,
  drop column if exists missed_call_threshold_seconds,
  drop column if exists ai_enabled,
  drop column if exists sms_help_message,
  drop column if exists opt_out_confirmation_message,
  drop column if exists opt_in_confirmation_message;

--------------------------------------------------------------------------------
-- Business settings for missed calls and texts
--------------------------------------------------------------------------------

alter table app_public.business_settings
  add column forward_to_phone app_public.e164_phone,
  add column ring_timeout_seconds integer not null default 20,
  add column missed_call_threshold_seconds integer not null default 10,
  add column ai_enabled boolean not null default true,
  add column sms_help_message text not null default '[BUSINESS]: reply to this number and we will get back to you. Msg & data rates may apply. Reply STOP to opt out.',
  add column opt_out_confirmation_message text not null default '[BUSINESS]: you are unsubscribed and will get no more texts from us. Reply START to subscribe again.',
  add column opt_in_confirmation_message text not null default '[BUSINESS]: you are subscribed again. Reply HELP for help, STOP to opt out.',
  add constraint business_settings_ring_timeout_seconds_must_be_between_5_and_60 check (ring_timeout_seconds between 5 and 60),
  add constraint business_settings_missed_call_threshold_seconds_must_be_between_0_and_600 check (missed_call_threshold_seconds between 0 and 600),
  add constraint business_settings_sms_help_message_must_be_1_to_320_characters check (pg_catalog.length(pg_catalog.btrim(sms_help_message)) between 1 and 320),
  add constraint business_settings_opt_out_confirmation_message_must_be_1_to_320_characters check (pg_catalog.length(pg_catalog.btrim(opt_out_confirmation_message)) between 1 and 320),
  add constraint business_settings_opt_in_confirmation_message_must_be_1_to_320_characters check (pg_catalog.length(pg_catalog.btrim(opt_in_confirmation_message)) between 1 and 320);
comment on column app_public.business_settings.forward_to_phone is 'The phone that calls to the business number ring first (E.164). When empty every call counts as missed and gets the automatic reply.';
comment on column app_public.business_settings.ring_timeout_seconds is 'Seconds the forwarded call rings before it counts as not answered (5 to 60).';
comment on column app_public.business_settings.missed_call_threshold_seconds is 'A forwarded call answered for fewer seconds than this (e.g. picked up by a voicemail box or hung up at once) also counts as missed (0 to 600).';
comment on column app_public.business_settings.ai_enabled is 'Let the AI assistant take over a conversation nobody answered within the ai_takeover_delay of the user who owns it.';
comment on column app_public.business_settings.sms_help_message is 'The reply to HELP or INFO; [BUSINESS] is replaced with the business name.';
comment on column app_public.business_settings.opt_out_confirmation_message is 'The one confirmation sent after STOP (and the other opt-out words); [BUSINESS] is replaced with the business name.';
comment on column app_public.business_settings.opt_in_confirmation_message is 'The confirmation sent after START, UNSTOP or YES from an opted-out number; [BUSINESS] is replaced with the business name.';
grant insert (forward_to_phone, ring_timeout_seconds, missed_call_threshold_seconds, ai_enabled, sms_help_message,
  opt_out_confirmation_message, opt_in_confirmation_message) on app_public.business_settings to :DATABASE_VISITOR;
grant update (forward_to_phone, ring_timeout_seconds, missed_call_threshold_seconds, ai_enabled, sms_help_message,
  opt_out_confirmation_message, opt_in_confirmation_message) on app_public.business_settings to :DATABASE_VISITOR;

-- A Twilio number reaches exactly one tenant: an active tracking number is unique across tenants.
create unique index tracking_numbers_active_phone_must_be_unique on app_public.tracking_numbers (phone) where is_active;

--------------------------------------------------------------------------------
-- Phone numbers and messaging services
--------------------------------------------------------------------------------

create table app_public.phone_numbers (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  phone_number app_public.e164_phone,
  phone_number_sid text,
  messaging_service_sid text,
  friendly_name text,
  area_code text not null,
  region text,
  number_type text not null default 'local',
  capabilities text[] not null default '{voice,sms}',
  status text not null default 'provisioning',
  status_reason text,
  date_provisioned timestamptz,
  date_released timestamptz,
  webhooks_configured boolean not null default false,
  voice_webhook_url text,
  sms_webhook_url text,
  status_callback_url text,
  monthly_price_cents integer not null default 100,
  setup_price_cents integer not null default 0,
  currency text not null default 'USD',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint phone_numbers_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint phone_numbers_id_must_be_unique_per_tenant unique (tenant_id, id),
  constraint phone_numbers_phone_number_must_be_unique unique (phone_number),
  constraint phone_numbers_phone_number_sid_must_be_unique unique (phone_number_sid),
  constraint phone_numbers_area_code_must_be_3_digits check (area_code ~ '^[2-9][0-9]{2}$'),
  constraint phone_numbers_number_type_must_be_known check (number_type in ('local', 'toll_free', 'mobile')),
  constraint phone_numbers_status_must_be_known check (status in ('provisioning', 'active', 'suspended', 'releasing', 'released', 'failed')),
  constraint phone_numbers_active_number_needs_a_number_and_sid check (status in ('provisioning', 'failed') or (phone_number is not null and phone_number_sid is not null)),
  constraint phone_numbers_capabilities_must_be_known check (capabilities <@ array['voice', 'sms', 'mms', 'fax']),
  constraint phone_numbers_prices_must_not_be_negative check (monthly_price_cents >= 0 and setup_price_cents >= 0),
  constraint phone_numbers_currency_must_be_an_iso_code check (currency ~ '^[A-Z]{3}$')
);
create index phone_numbers_by_tenant on app_public.phone_numbers (tenant_id, status);
comment on table app_public.phone_numbers is $$@behavior -insert -update -delete
The Twilio numbers of the tenant: callers ring them, texts arrive on them, and automatic replies leave from them. Request one with request_phone_number (owners and admins): a job buys a local number in the area code and points its webhooks at Switchboard. Status: provisioning, active, suspended, releasing, released or failed (with status_reason).$$;
comment on column app_public.phone_numbers.id is 'The row''s id.';
comment on column app_public.phone_numbers.tenant_id is 'The tenant the number belongs to.';
comment on column app_public.phone_numbers.phone_number is 'The number (E.164); empty until provisioning has bought it.';
comment on column app_public.phone_numbers.phone_number_sid is 'Twilio''s id of the number (PN…).';
comment on column app_public.phone_numbers.messaging_service_sid is 'The Twilio Messaging Service (MG…) texts leave through, if any.';
comment on column app_public.phone_numbers.friendly_name is 'A name for people.';
comment on column app_public.phone_numbers.area_code is 'The area code asked for (3 digits).';
comment on column app_public.phone_numbers.region is 'The state or province of the number, as Twilio reports it.';
comment on column app_public.phone_numbers.number_type is 'local, toll_free or mobile.';
comment on column app_public.phone_numbers.capabilities is 'What the number can do: voice, sms, mms, fax.';
comment on column app_public.phone_numbers.status is 'provisioning, active, suspended, releasing, released or failed.';
comment on column app_public.phone_numbers.status_reason is 'Why the number is in its status, in words (e.g. the provider error of a failed provisioning).';
comment on column app_public.phone_numbers.date_provisioned is 'When the number was bought and configured.';
comment on column app_public.phone_numbers.date_released is 'When the number was given back.';
comment on column app_public.phone_numbers.webhooks_configured is 'True once the number sends its calls and texts to Switchboard.';
comment on column app_public.phone_numbers.voice_webhook_url is 'Where Twilio sends incoming calls.';
comment on column app_public.phone_numbers.sms_webhook_url is 'Where Twilio sends incoming texts.';
comment on column app_public.phone_numbers.status_callback_url is 'Where Twilio sends call status changes.';
comment on column app_public.phone_numbers.monthly_price_cents is 'Monthly price in cents.';
comment on column app_public.phone_numbers.setup_price_cents is 'One-off price in cents.';
comment on column app_public.phone_numbers.currency is 'ISO 4217 currency of the prices.';
comment on column app_public.phone_numbers.created_at is 'When the number was requested.';
comment on column app_public.phone_numbers.updated_at is 'When the row last changed.';

create table app_public.messaging_services (
  phone_number_id uuid primary key,
  tenant_id uuid not null,
  messaging_service_sid text not null,
  friendly_name text not null,
  inbound_webhook_url text not null,
  inbound_method text not null default 'POST',
  fallback_url text,
  status_callback text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint messaging_services_phone_number_must_exist foreign key (tenant_id, phone_number_id)
    references app_public.phone_numbers (tenant_id, id) on delete cascade,
  constraint messaging_services_messaging_service_sid_must_be_unique unique (messaging_service_sid),
  constraint messaging_services_inbound_method_must_be_get_or_post check (inbound_method in ('GET', 'POST'))
);
create index messaging_services_by_tenant on app_public.messaging_services (tenant_id);
comment on table app_public.messaging_services is $$@behavior -insert -update -delete
The Twilio Messaging Service of a phone number (one per number), created by provisioning: texts from the number leave through it and inbound texts reach inbound_webhook_url.$$;
comment on column app_public.messaging_services.phone_number_id is 'The number the service belongs to.';
comment on column app_public.messaging_services.tenant_id is 'The tenant.';
comment on column app_public.messaging_services.messaging_service_sid is 'Twilio''s id of the service (MG…).';
comment on column app_public.messaging_services.friendly_name is 'A name for people.';
comment on column app_public.messaging_services.inbound_webhook_url is 'Where Twilio sends inbound texts.';
comment on column app_public.messaging_services.inbound_method is 'HTTP method of the inbound webhook (GET or POST).';
comment on column app_public.messaging_services.fallback_url is 'Where Twilio sends inbound texts when the main webhook fails.';
comment on column app_public.messaging_services.status_callback is 'Where Twilio sends delivery status changes.';
comment on column app_public.messaging_services.created_at is 'When the service was created.';
comment on column app_public.messaging_services.updated_at is 'When the row last changed.';

--------------------------------------------------------------------------------
-- Calls, conversations, messages, consent
--------------------------------------------------------------------------------

create table app_public.calls (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  call_sid text not null,
  phone_number_id uuid,
  tracking_number_id uuid,
  agent_id uuid,
  customer_phone app_public.e164_phone not null,
  business_phone app_public.e164_phone not null,
  direction text not null default 'inbound',
  status text not null default 'ringing',
  forwarded_to app_public.e164_phone,
  dial_status text,
  dial_duration integer,
  start_time timestamptz not null default now(),
  end_time timestamptz,
  duration integer not null default 0,
  missed boolean,
  processed boolean not null default false,
  processed_at timestamptz,
  sms_triggered boolean not null default false,
  conversation_created boolean not null default false,
  lead_created boolean not null default false,
  conversation_id uuid,
  lead_id uuid,
  caller_city text,
  caller_state text,
  caller_country text not null default 'US',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint calls_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint calls_id_must_be_unique_per_tenant unique (tenant_id, id),
  constraint calls_call_sid_must_be_unique unique (call_sid),
  constraint calls_call_sid_must_look_like_a_twilio_call_sid check (call_sid ~ '^CA[0-9a-fA-F]{32}$'),
  constraint calls_phone_number_must_exist foreign key (tenant_id, phone_number_id) references app_public.phone_numbers (tenant_id, id) on delete set null (phone_number_id),
  constraint calls_agent_must_exist foreign key (tenant_id, agent_id) references app_public.agents (tenant_id, id) on delete set null (agent_id),
  constraint calls_lead_must_exist foreign key (tenant_id, lead_id) references app_public.leads (tenant_id, id) on delete set null (lead_id),
  constraint calls_direction_must_be_known check (direction in ('inbound', 'outbound')),
  constraint calls_status_must_be_known check (status in ('queued', 'ringing', 'in-progress', 'completed', 'busy', 'failed', 'no-answer', 'canceled')),
  constraint calls_dial_status_must_be_known check (dial_status in ('completed', 'answered', 'busy', 'failed', 'no-answer', 'canceled')),
  constraint calls_durations_must_not_be_negative check (duration >= 0 and dial_duration >= 0)
);
create index calls_by_tenant_and_time on app_public.calls (tenant_id, start_time desc);
create index calls_by_customer_phone on app_public.calls (tenant_id, customer_phone);
create index calls_by_lead on app_public.calls (tenant_id, lead_id) where lead_id is not null;
create index calls_by_agent on app_public.calls (tenant_id, agent_id) where agent_id is not null;
comment on table app_public.calls is $$@behavior -insert -update -delete
Every call to one of the numbers of the tenant, one row per Twilio CallSid, written by the voice webhooks (repeated or out-of-order deliveries change nothing; status only moves forward). A missed call (not answered, busy, failed, or answered for less than missed_call_threshold_seconds) is processed once: the caller gets the automatic reply, a conversation and a lead.$$;
comment on column app_public.calls.id is 'The row''s id.';
comment on column app_public.calls.tenant_id is 'The tenant whose number was called.';
comment on column app_public.calls.call_sid is 'Twilio''s id of the call (CA…).';
comment on column app_public.calls.phone_number_id is 'The tenant number that was called, when it was one of phone_numbers.';
comment on column app_public.calls.tracking_number_id is 'The agent tracking number that was called, when it was one.';
comment on column app_public.calls.agent_id is 'The agent the call is attributed to (through their tracking number).';
comment on column app_public.calls.customer_phone is 'The caller (E.164).';
comment on column app_public.calls.business_phone is 'The number that was called (E.164).';
comment on column app_public.calls.direction is 'inbound or outbound.';
comment on column app_public.calls.status is 'Twilio call status: queued, ringing, in-progress, completed, busy, failed, no-answer or canceled. Only moves forward.';
comment on column app_public.calls.forwarded_to is 'The phone the call was forwarded to, if any.';
comment on column app_public.calls.dial_status is 'How the forwarded leg ended (DialCallStatus): completed, answered, busy, failed, no-answer or canceled.';
comment on column app_public.calls.dial_duration is 'Seconds the forwarded leg was connected.';
comment on column app_public.calls.start_time is 'When the call came in.';
comment on column app_public.calls.end_time is 'When it ended.';
comment on column app_public.calls.duration is 'Length of the whole call in seconds.';
comment on column app_public.calls.missed is 'True when the call counts as missed, false when answered; empty while it is going on.';
comment on column app_public.calls.processed is 'True once the missed call has been handled (automatic reply, conversation, lead). Happens once.';
comment on column app_public.calls.processed_at is 'When it was handled.';
comment on column app_public.calls.sms_triggered is 'An automatic reply was queued for the caller.';
comment on column app_public.calls.conversation_created is 'A new conversation was started (false when an active one was reused).';
comment on column app_public.calls.lead_created is 'A new lead was created (false when the caller was already a lead).';
comment on column app_public.calls.conversation_id is 'The conversation with the caller.';
comment on column app_public.calls.lead_id is 'The caller''s lead.';
comment on column app_public.calls.caller_city is 'City of the caller, as Twilio reports it.';
comment on column app_public.calls.caller_state is 'State of the caller, as Twilio reports it.';
comment on column app_public.calls.caller_country is 'Country of the caller, as Twilio reports it.';
comment on column app_public.calls.created_at is 'When the row was written.';
comment on column app_public.calls.updated_at is 'When the row last changed.';

create table app_public.conversations (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  call_id uuid,
  phone_number_id uuid,
  agent_id uuid,
  customer_phone app_public.e164_phone not null,
  business_phone app_public.e164_phone not null,
  status text not null default 'active',
  started_by text not null default 'customer',
  ai_active boolean not null default false,
  human_active boolean not null default false,
  ai_handoff_time timestamptz,
  human_takeover_time timestamptz,
  last_message_time timestamptz not null default now(),
  last_customer_message_time timestamptz,
  last_human_response_time timestamptz,
  message_count integer not null default 0,
  ai_message_count integer not null default 0,
  human_message_count integer not null default 0,
  outcome text,
  appointment_scheduled boolean not null default false,
  lead_id uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint conversations_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint conversations_id_must_be_unique_per_tenant unique (tenant_id, id),
  constraint conversations_call_must_exist foreign key (tenant_id, call_id) references app_public.calls (tenant_id, id) on delete set null (call_id),
  constraint conversations_agent_must_exist foreign key (tenant_id, agent_id) references app_public.agents (tenant_id, id) on delete set null (agent_id),
  constraint conversations_lead_must_exist foreign key (tenant_id, lead_id) references app_public.leads (tenant_id, id) on delete set null (lead_id),
  constraint conversations_status_must_be_known check (status in ('active', 'closed', 'opted_out')),
  constraint conversations_started_by_must_be_known check (started_by in ('customer', 'business')),
  constraint conversations_outcome_must_be_known check (outcome in ('qualified', 'appointment', 'not_interested', 'wrong_number', 'opted_out', 'closed')),
  constraint conversations_counts_must_not_be_negative check (message_count >= 0 and ai_message_count >= 0 and human_message_count >= 0),
  constraint conversations_ai_and_human_cannot_both_be_active check (not (ai_active and human_active))
);
create unique index conversations_one_active_per_customer_and_number on app_public.conversations (tenant_id, customer_phone, business_phone)
  where status = 'active';
create index conversations_by_tenant_and_time on app_public.conversations (tenant_id, last_message_time desc);
create index conversations_by_lead on app_public.conversations (tenant_id, lead_id) where lead_id is not null;
alter table app_public.calls add constraint calls_conversation_must_exist foreign key (tenant_id, conversation_id)
  references app_public.conversations (tenant_id, id) on delete set null (conversation_id);
comment on table app_public.conversations is $$@behavior -insert -update -delete
A text conversation between a customer and one of the numbers of the tenant; at most one active one per customer and number. Started by a missed call or an inbound text. A human answers with send_conversation_reply, which stops the AI; if nobody answers within the ai_takeover_delay of the owner, the AI assistant takes over (when business_settings.ai_enabled).$$;
comment on column app_public.conversations.id is 'The row''s id.';
comment on column app_public.conversations.tenant_id is 'The tenant.';
comment on column app_public.conversations.call_id is 'The missed call that started it, if one did.';
comment on column app_public.conversations.phone_number_id is 'The tenant number the conversation runs on, when it is one of phone_numbers.';
comment on column app_public.conversations.agent_id is 'The agent the conversation is attributed to (tracking number).';
comment on column app_public.conversations.customer_phone is 'The customer (E.164).';
comment on column app_public.conversations.business_phone is 'The tenant number (E.164).';
comment on column app_public.conversations.status is 'active, closed or opted_out (the customer texted STOP).';
comment on column app_public.conversations.started_by is 'customer (a call or text from them) or business.';
comment on column app_public.conversations.ai_active is 'The AI assistant is answering.';
comment on column app_public.conversations.human_active is 'A person of the business is answering (the AI stays quiet).';
comment on column app_public.conversations.ai_handoff_time is 'When the AI took over.';
comment on column app_public.conversations.human_takeover_time is 'When a person first replied.';
comment on column app_public.conversations.last_message_time is 'When the newest message was written.';
comment on column app_public.conversations.last_customer_message_time is 'When the customer last wrote.';
comment on column app_public.conversations.last_human_response_time is 'When a person of the business last replied.';
comment on column app_public.conversations.message_count is 'Messages in the conversation.';
comment on column app_public.conversations.ai_message_count is 'Messages written by the AI.';
comment on column app_public.conversations.human_message_count is 'Messages written by people of the business.';
comment on column app_public.conversations.outcome is 'qualified, appointment, not_interested, wrong_number, opted_out or closed.';
comment on column app_public.conversations.appointment_scheduled is 'An appointment came out of it.';
comment on column app_public.conversations.lead_id is 'The customer''s lead.';
comment on column app_public.conversations.created_at is 'When the conversation started.';
comment on column app_public.conversations.updated_at is 'When the row last changed.';

create table app_public.messages (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  conversation_id uuid,
  lead_id uuid,
  direction text not null,
  sender text not null,
  purpose text not null,
  from_phone app_public.e164_phone,
  to_phone app_public.e164_phone not null,
  messaging_service_sid text,
  body text not null,
  message_sid text,
  idempotency_key text,
  status text not null,
  provider_status text,
  scheduled_for timestamptz not null default now(),
  attempts integer not null default 0,
  error_code integer,
  error_message text,
  intent text,
  confidence numeric(3, 2),
  processed boolean not null default false,
  ai_processed boolean not null default false,
  num_media integer not null default 0,
  sending_at timestamptz,
  sent_at timestamptz,
  delivered_at timestamptz,
  failed_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint messages_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint messages_id_must_be_unique_per_tenant unique (tenant_id, id),
  constraint messages_conversation_must_exist foreign key (tenant_id, conversation_id) references app_public.conversations (tenant_id, id) on delete cascade,
  constraint messages_lead_must_exist foreign key (tenant_id, lead_id) references app_public.leads (tenant_id, id) on delete set null (lead_id),
  constraint messages_message_sid_must_be_unique unique (message_sid),
  constraint messages_idempotency_key_must_be_unique_per_tenant unique (tenant_id, idempotency_key),
  constraint messages_direction_must_be_known check (direction in ('inbound', 'outbound')),
  constraint messages_sender_must_be_known check (sender in ('customer', 'ai', 'human', 'system')),
  constraint messages_purpose_must_be_known check (purpose in ('conversation', 'auto_response', 'opt_out_confirmation', 'opt_in_confirmation', 'help', 'notification', 'marketing', 'nurture')),
  constraint messages_inbound_must_come_from_the_customer check (direction = 'outbound' or (sender = 'customer' and purpose = 'conversation' and from_phone is not null)),
  constraint messages_outbound_must_not_come_from_the_customer check (direction = 'inbound' or sender <> 'customer'),
  constraint messages_outbound_needs_a_sender_number_or_service check (direction = 'inbound' or from_phone is not null or messaging_service_sid is not null),
  constraint messages_status_must_match_direction check (
    (direction = 'inbound' and status = 'received')
    or (direction = 'outbound' and status in ('queued', 'sending', 'sent', 'delivered', 'undelivered', 'failed', 'canceled'))),
  constraint messages_outbound_body_must_be_1_to_1600_characters check (direction = 'inbound' or pg_catalog.length(body) between 1 and 1600),
  constraint messages_outbound_body_must_not_be_blank check (direction = 'inbound' or pg_catalog.btrim(body) <> ''),
  constraint messages_inbound_body_must_be_at_most_100000_characters check (pg_catalog.length(body) <= 100000),
  constraint messages_idempotency_key_must_be_1_to_200_characters check (pg_catalog.length(idempotency_key) between 1 and 200),
  constraint messages_confidence_must_be_between_0_and_1 check (confidence between 0 and 1),
  constraint messages_attempts_must_not_be_negative check (attempts >= 0)
);
create index messages_by_conversation on app_public.messages (tenant_id, conversation_id, created_at);
create index messages_by_lead on app_public.messages (tenant_id, lead_id, created_at) where lead_id is not null;
create index messages_outbound_by_recipient on app_public.messages (tenant_id, to_phone, scheduled_for) where direction = 'outbound';
create index messages_pending on app_public.messages (status, scheduled_for) where status in ('queued', 'sending');
comment on table app_public.messages is $$@behavior -insert -update -delete
Every text in and out. Outbound texts are an outbox: a row is written first (unique idempotency_key per tenant), then the sms__send job hands it to the provider: status queued, sending, sent, then delivered, undelivered or failed (or canceled, e.g. after an opt-out). Status only moves forward. The database refuses (SQLSTATE SB001) to queue a text to a number on the do-not-contact list, except the one opt-out confirmation and HELP replies; marketing and nurture texts wait for the legal sending hours and the per-state daily cap (see sms_send_window). Replies in a conversation the customer started (purpose conversation, auto_response) are not marketing and are not held to those hours.$$;
comment on column app_public.messages.id is 'The row''s id.';
comment on column app_public.messages.tenant_id is 'The tenant.';
comment on column app_public.messages.conversation_id is 'The conversation the text belongs to, if any.';
comment on column app_public.messages.lead_id is 'The lead it was sent to or came from.';
comment on column app_public.messages.direction is 'inbound (from the customer) or outbound.';
comment on column app_public.messages.sender is 'customer, ai, human or system.';
comment on column app_public.messages.purpose is 'Why it was sent: conversation, auto_response, opt_out_confirmation, opt_in_confirmation, help, notification, marketing or nurture. Only marketing and nurture are held to quiet hours and caps.';
comment on column app_public.messages.from_phone is 'The sending number (E.164).';
comment on column app_public.messages.to_phone is 'The receiving number (E.164).';
comment on column app_public.messages.messaging_service_sid is 'The Messaging Service it leaves through, if any.';
comment on column app_public.messages.body is 'The text. Outbound: 1 to 1600 characters.';
comment on column app_public.messages.message_sid is 'The provider''s id of the message (SM…), once known.';
comment on column app_public.messages.idempotency_key is 'Unique per tenant: queuing the same key twice returns the first message instead of sending again.';
comment on column app_public.messages.status is 'inbound: received. outbound: queued, sending, sent, delivered, undelivered, failed or canceled; only moves forward.';
comment on column app_public.messages.provider_status is 'The last status the provider reported, as it reported it.';
comment on column app_public.messages.scheduled_for is 'Not before this moment (later than the queuing time when quiet hours or a daily cap held a marketing text back).';
comment on column app_public.messages.attempts is 'How many times a worker took it to the provider.';
comment on column app_public.messages.error_code is 'The provider''s error code (e.g. Twilio 21610 unsubscribed recipient).';
comment on column app_public.messages.error_message is 'What went wrong, in words.';
comment on column app_public.messages.intent is 'For AI and customer messages: the intent recognised (e.g. ask_address, emergency).';
comment on column app_public.messages.confidence is 'How sure the AI was of the intent (0 to 1).';
comment on column app_public.messages.processed is 'Inbound: handled (keywords, conversation, lead).';
comment on column app_public.messages.ai_processed is 'Inbound: the AI has answered it.';
comment on column app_public.messages.num_media is 'Inbound: number of pictures or other media attached.';
comment on column app_public.messages.sending_at is 'When a worker took it to the provider.';
comment on column app_public.messages.sent_at is 'When the provider accepted it.';
comment on column app_public.messages.delivered_at is 'When the provider reported it delivered.';
comment on column app_public.messages.failed_at is 'When it failed, was undelivered or was canceled.';
comment on column app_public.messages.created_at is 'When the row was written (received, or queued).';
comment on column app_public.messages.updated_at is 'When the row last changed.';

create table app_public.sms_consent_events (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  phone app_public.e164_phone not null,
  event text not null,
  source text not null,
  keyword text,
  message_id uuid,
  occurred_at timestamptz not null default now(),
  constraint sms_consent_events_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint sms_consent_events_message_must_exist foreign key (tenant_id, message_id) references app_public.messages (tenant_id, id) on delete set null (message_id),
  constraint sms_consent_events_event_must_be_known check (event in ('opt_out', 'opt_in')),
  constraint sms_consent_events_source_must_be_known check (source in ('sms_keyword', 'provider', 'api', 'import', 'manual'))
);
create index sms_consent_events_by_phone on app_public.sms_consent_events (tenant_id, phone, occurred_at desc);
comment on table app_public.sms_consent_events is $$@behavior -insert -update -delete
Every change of consent to receive texts, with its source and time: opt_out (STOP and the other opt-out words; the number joins the do-not-contact list) and opt_in (START, UNSTOP or YES; an opt-out entry leaves the list). Append-only.$$;
comment on column app_public.sms_consent_events.id is 'The row''s id.';
comment on column app_public.sms_consent_events.tenant_id is 'The tenant.';
comment on column app_public.sms_consent_events.phone is 'The number (E.164).';
comment on column app_public.sms_consent_events.event is 'opt_out or opt_in.';
comment on column app_public.sms_consent_events.source is 'sms_keyword (the customer texted it), provider, api, import or manual.';
comment on column app_public.sms_consent_events.keyword is 'The word the customer texted, upper-cased (e.g. STOP).';
comment on column app_public.sms_consent_events.message_id is 'The inbound message that carried it.';
comment on column app_public.sms_consent_events.occurred_at is 'When it happened.';

create table app_private.local_provider_messages (
  sid text primary key,
  to_phone text not null,
  from_phone text,
  messaging_service_sid text,
  body text not null,
  status text not null default 'sent',
  status_callback_url text,
  created_at timestamptz not null default now()
);
comment on table app_private.local_provider_messages is 'What the local SMS provider (used when no Twilio credentials are configured) "sent": nothing leaves the machine; the worker reports each message delivered through the status webhook, as Twilio would.';
comment on column app_private.local_provider_messages.sid is 'The made-up message id (SM + 32 hex digits).';
comment on column app_private.local_provider_messages.to_phone is 'Recipient.';
comment on column app_private.local_provider_messages.from_phone is 'Sender number, if one was given.';
comment on column app_private.local_provider_messages.messaging_service_sid is 'Messaging Service, if one was given.';
comment on column app_private.local_provider_messages.body is 'The text.';
comment on column app_private.local_provider_messages.status is 'sent or delivered.';
comment on column app_private.local_provider_messages.status_callback_url is 'Where the delivery report goes.';
comment on column app_private.local_provider_messages.created_at is 'When it was sent.';

--------------------------------------------------------------------------------
-- Row-level security and grants: members read their tenant; all writes go through functions.
--------------------------------------------------------------------------------

alter table app_public.phone_numbers enable row level security;
alter table app_public.phone_numbers force row level security;
create policy owner_all on app_public.phone_numbers for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.phone_numbers for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.phone_numbers to :DATABASE_VISITOR;

alter table app_public.messaging_services enable row level security;
alter table app_public.messaging_services force row level security;
create policy owner_all on app_public.messaging_services for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.messaging_services for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.messaging_services to :DATABASE_VISITOR;

alter table app_public.calls enable row level security;
alter table app_public.calls force row level security;
create policy owner_all on app_public.calls for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.calls for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.calls to :DATABASE_VISITOR;

alter table app_public.conversations enable row level security;
alter table app_public.conversations force row level security;
create policy owner_all on app_public.conversations for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.conversations for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.conversations to :DATABASE_VISITOR;

alter table app_public.messages enable row level security;
alter table app_public.messages force row level security;
create policy owner_all on app_public.messages for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.messages for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.messages to :DATABASE_VISITOR;

alter table app_public.sms_consent_events enable row level security;
alter table app_public.sms_consent_events force row level security;
create policy owner_all on app_public.sms_consent_events for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.sms_consent_events for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.sms_consent_events to :DATABASE_VISITOR;

alter table app_private.local_provider_messages enable row level security;
alter table app_private.local_provider_messages force row level security;
create policy owner_all on app_private.local_provider_messages for all to :DATABASE_OWNER using (true) with check (true);

create trigger _100_timestamps before insert or update on app_public.phone_numbers
  for each row execute function app_private.tg__timestamps();
create trigger _100_timestamps before insert or update on app_public.messaging_services
  for each row execute function app_private.tg__timestamps();
create trigger _100_timestamps before insert or update on app_public.calls
  for each row execute function app_private.tg__timestamps();
create trigger _100_timestamps before insert or update on app_public.conversations
  for each row execute function app_private.tg__timestamps();
create trigger _100_timestamps before insert or update on app_public.messages
  for each row execute function app_private.tg__timestamps();

--------------------------------------------------------------------------------
-- In-app notifications (the business owner hears of qualified leads)
--------------------------------------------------------------------------------

create table app_public.notifications (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  user_id uuid not null,
  kind text not null,
  title text not null,
  body text not null,
  lead_id uuid,
  conversation_id uuid,
  sms_message_id uuid,
  read_at timestamptz,
  created_at timestamptz not null default now(),
  constraint notifications_user_must_be_a_member foreign key (tenant_id, user_id) references app_public.memberships (tenant_id, user_id) on delete cascade,
  constraint notifications_lead_must_exist foreign key (tenant_id, lead_id) references app_public.leads (tenant_id, id) on delete cascade,
  constraint notifications_conversation_must_exist foreign key (tenant_id, conversation_id) references app_public.conversations (tenant_id, id) on delete set null (conversation_id),
  constraint notifications_sms_message_must_exist foreign key (tenant_id, sms_message_id) references app_public.messages (tenant_id, id) on delete set null (sms_message_id),
  constraint notifications_kind_must_be_known check (kind in ('lead_qualified', 'conversation_needs_human')),
  constraint notifications_one_per_kind_and_lead unique (tenant_id, user_id, kind, lead_id)
);
create index notifications_unread_by_user on app_public.notifications (tenant_id, user_id, created_at desc) where read_at is null;
comment on table app_public.notifications is $$@behavior -insert -delete
Messages for people of the business, e.g. a lead the AI assistant qualified. Always shown in the app (this table); also texted to the user when their preferences say notification_sms and their profile has a phone number. You see your own; mark one read by setting read_at.$$;
comment on column app_public.notifications.id is 'The row''s id.';
comment on column app_public.notifications.tenant_id is 'The tenant.';
comment on column app_public.notifications.user_id is 'Who it is for.';
comment on column app_public.notifications.kind is 'lead_qualified or conversation_needs_human.';
comment on column app_public.notifications.title is 'One line.';
comment on column app_public.notifications.body is 'The details.';
comment on column app_public.notifications.lead_id is 'The lead it is about.';
comment on column app_public.notifications.conversation_id is 'The conversation it is about.';
comment on column app_public.notifications.sms_message_id is 'The text that carried it, when one was sent.';
comment on column app_public.notifications.read_at is 'When the user read it (set it to mark it read).';
comment on column app_public.notifications.created_at is 'When it was written.';
alter table app_public.notifications enable row level security;
alter table app_public.notifications force row level security;
create policy owner_all on app_public.notifications for all to :DATABASE_OWNER using (true) with check (true);
create policy select_own on app_public.notifications for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()) and user_id = (select app_public.current_user_id()));
create policy update_own on app_public.notifications for update to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()) and user_id = (select app_public.current_user_id()))
  with check (tenant_id = (select app_public.current_tenant_id()) and user_id = (select app_public.current_user_id()));
grant select on app_public.notifications to :DATABASE_VISITOR;
grant update (read_at) on app_public.notifications to :DATABASE_VISITOR;

--------------------------------------------------------------------------------
-- Small helpers
--------------------------------------------------------------------------------

create function app_hidden.message_status_rank(status text) returns integer
  language sql immutable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select case status
    when 'received' then 0
    when 'queued' then 0
    when 'sending' then 1
    when 'sent' then 2
    when 'delivered' then 3
    when 'undelivered' then 3
    when 'failed' then 3
    when 'canceled' then 3
  end
$$;
comment on function app_hidden.message_status_rank(text) is 'Order of message statuses: queued 0, sending 1, sent 2, and the final ones (delivered, undelivered, failed, canceled) 3. A status only ever moves to a higher rank, and a final one never changes.';

create function app_hidden.call_status_rank(status text) returns integer
  language sql immutable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select case status
    when 'queued' then 0
    when 'ringing' then 1
    when 'in-progress' then 2
    when 'completed' then 3
    when 'busy' then 3
    when 'failed' then 3
    when 'no-answer' then 3
    when 'canceled' then 3
  end
$$;
comment on function app_hidden.call_status_rank(text) is 'Order of Twilio call statuses: queued 0, ringing 1, in-progress 2, and the final ones (completed, busy, failed, no-answer, canceled) 3. A call status only moves to a higher rank.';

create function app_hidden.fill_sms_template(template text, tenant_id uuid) returns text
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select pg_catalog.replace(pg_catalog.replace(template, '[BUSINESS]', t.business_name), '[TRADE]', coalesce(t.trade_type, 'service'))
  from app_public.tenants t
  where t.id = fill_sms_template.tenant_id
$$;
comment on function app_hidden.fill_sms_template(text, uuid) is 'A message template with [BUSINESS] replaced by the business name of the tenant and [TRADE] by its trade (or "service").';

create function app_private.number_owner(phone text,
    out tenant_id uuid, out phone_number_id uuid, out tracking_number_id uuid, out agent_id uuid, out messaging_service_sid text)
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  (select p.tenant_id, p.id, null::uuid, null::uuid, p.messaging_service_sid
   from app_public.phone_numbers p
   where p.phone_number = number_owner.phone and p.status in ('active', 'suspended'))
  union all
  (select t.tenant_id, null::uuid, t.id, t.agent_id, null::text
   from app_public.tracking_numbers t
   where t.phone = number_owner.phone and t.is_active)
  limit 1
$$;
comment on function app_private.number_owner(text) is 'Whose number this is: the tenant of an active phone_numbers row or of an active agent tracking number (then also the tracking number and its agent). No row when the number is not ours.';

--------------------------------------------------------------------------------
-- Caller lead and conversation: found or created, safe under concurrent webhooks
--------------------------------------------------------------------------------

create function app_private.caller_lead(tenant_id uuid, phone text, source text, agent_id uuid, city text, region text,
    out lead_id uuid, out created boolean)
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  created := false;
  for attempt in 1..3 loop
    select l.id into lead_id
    from app_public.leads l
    where l.tenant_id = caller_lead.tenant_id and l.phone = caller_lead.phone and l.deleted_at is null
    for update;
    if found then
      update app_public.leads l
      set last_contact_at = now(),
          owner_agent_id = coalesce(l.owner_agent_id, caller_lead.agent_id),
          city = coalesce(l.city, nullif(pg_catalog.btrim(caller_lead.city), '')),
          region = coalesce(l.region, nullif(pg_catalog.btrim(caller_lead.region), ''))
      where l.id = caller_lead.lead_id;
      return;
    end if;
    begin
      insert into app_public.leads (tenant_id, phone, source, owner_agent_id, city, region, last_contact_at)
      values (caller_lead.tenant_id, caller_lead.phone, caller_lead.source, caller_lead.agent_id,
        nullif(pg_catalog.btrim(caller_lead.city), ''), nullif(pg_catalog.btrim(caller_lead.region), ''), now())
      returning id into lead_id;
      created := true;
      return;
    exception when unique_violation then
      -- Another transaction created the lead of this caller at the same moment: use it.
      null;
    end;
  end loop;
  raise exception 'Could not create or find the lead of %', caller_lead.phone using errcode = '40001';
end;
$$;
comment on function app_private.caller_lead(uuid, text, text, uuid, text, text) is 'The live lead of a caller or texter in a tenant, created when there is none (source e.g. missed_call), and touched (last_contact_at, agent attribution, city and state when unknown) when there is. Safe when several webhooks of the same caller run at once: exactly one lead.';

create function app_private.caller_conversation(tenant_id uuid, customer_phone text, business_phone text,
    phone_number_id uuid, agent_id uuid, call_id uuid, lead_id uuid, out conversation_id uuid, out created boolean)
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  created := false;
  for attempt in 1..3 loop
    select c.id into conversation_id
    from app_public.conversations c
    where c.tenant_id = caller_conversation.tenant_id and c.customer_phone = caller_conversation.customer_phone
      and c.business_phone = caller_conversation.business_phone and c.status = 'active'
    for update;
    if found then
      update app_public.conversations c
      set lead_id = coalesce(c.lead_id, caller_conversation.lead_id),
          call_id = coalesce(c.call_id, caller_conversation.call_id),
          agent_id = coalesce(c.agent_id, caller_conversation.agent_id)
      where c.id = caller_conversation.conversation_id
        and (c.lead_id is null or c.call_id is null or c.agent_id is null);
      return;
    end if;
    begin
      insert into app_public.conversations (tenant_id, customer_phone, business_phone, phone_number_id, agent_id, call_id, lead_id)
      values (caller_conversation.tenant_id, caller_conversation.customer_phone, caller_conversation.business_phone,
        caller_conversation.phone_number_id, caller_conversation.agent_id, caller_conversation.call_id, caller_conversation.lead_id)
      returning id into conversation_id;
      created := true;
      return;
    exception when unique_violation then
      null;
    end;
  end loop;
  raise exception 'Could not create or find the conversation with %', caller_conversation.customer_phone using errcode = '40001';
end;
$$;
comment on function app_private.caller_conversation(uuid, text, text, uuid, uuid, uuid, uuid) is 'The active conversation between a customer and a tenant number, created when there is none. Exactly one under concurrent webhooks (unique index conversations_one_active_per_customer_and_number).';

--------------------------------------------------------------------------------
-- The outbox: queue_message and the guard every outbound row passes
--------------------------------------------------------------------------------

create function app_private.queue_message(tenant_id uuid, to_phone text, from_phone text, body text, purpose text,
    sender text, conversation_id uuid default null, lead_id uuid default null, idempotency_key text default null,
    scheduled_for timestamptz default null) returns app_public.messages
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_message app_public.messages;
  v_service text;
begin
  if queue_message.to_phone is null or queue_message.to_phone !~ '^\+[1-9][0-9]{6,14}$' then
    raise exception 'Cannot text %: use E.164 form, e.g. +12125551234', coalesce(queue_message.to_phone, 'an empty number')
      using errcode = '22023';
  end if;
  if queue_message.body is null or pg_catalog.btrim(queue_message.body) = '' then
    raise exception 'A text needs a body' using errcode = '22023';
  end if;
  if pg_catalog.length(queue_message.body) > 1600 then
    raise exception 'A text can be at most 1600 characters (this one has %)', pg_catalog.length(queue_message.body)
      using errcode = '22023';
  end if;
  if queue_message.idempotency_key is not null then
    select m.* into v_message from app_public.messages m
    where m.tenant_id = queue_message.tenant_id and m.idempotency_key = queue_message.idempotency_key;
    if found then
      return v_message;
    end if;
  end if;
  select p.messaging_service_sid into v_service
  from app_public.phone_numbers p
  where p.tenant_id = queue_message.tenant_id and p.phone_number = queue_message.from_phone;

  insert into app_public.messages (tenant_id, conversation_id, lead_id, direction, sender, purpose, from_phone, to_phone,
    messaging_service_sid, body, idempotency_key, status, scheduled_for)
  values (queue_message.tenant_id, queue_message.conversation_id, queue_message.lead_id, 'outbound', queue_message.sender,
    queue_message.purpose, queue_message.from_phone, queue_message.to_phone, v_service, queue_message.body,
    queue_message.idempotency_key, 'queued', coalesce(queue_message.scheduled_for, now()))
  on conflict on constraint messages_idempotency_key_must_be_unique_per_tenant do nothing
  returning * into v_message;
  if v_message.id is null then
    -- The same key was queued by a concurrent transaction: return its message.
    select m.* into v_message from app_public.messages m
    where m.tenant_id = queue_message.tenant_id and m.idempotency_key = queue_message.idempotency_key;
  end if;
  return v_message;
end;
$$;
comment on function app_private.queue_message(uuid, text, text, text, text, text, uuid, uuid, text, timestamptz) is $$Writes one outbound text to the outbox (status queued) and enqueues its sms__send job, in the caller’s transaction. The same idempotency_key returns the first message instead of queuing again. The guard trigger on messages refuses do-not-contact numbers (SB001) and holds marketing and nurture texts to sending hours and daily caps. Errors: 22023 a number that is not E.164, an empty body or one over 1600 characters.$$;

create function app_private.tg_messages__guard_outbound() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_region text;
  v_timezone text;
  v_window app_public.sms_window;
  v_at timestamptz := NEW.scheduled_for;
  v_cap_hit timestamptz;
begin
  if NEW.purpose not in ('opt_out_confirmation', 'help')
     and exists (select 1 from app_public.dnc_list d where d.tenant_id = NEW.tenant_id and d.phone = NEW.to_phone) then
    raise exception 'Not sent: % is on the do-not-contact list of this business (it opted out or was blocked), so nothing may be texted to it', NEW.to_phone
      using errcode = 'SB001';
  end if;
  if NEW.purpose not in ('marketing', 'nurture') then
    return NEW;
  end if;

  -- One recipient at a time, so that concurrent queuing cannot pass a daily cap together.
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('sms-cap:' || NEW.tenant_id || ':' || NEW.to_phone, 0));
  select l.region, l.timezone into v_region, v_timezone
  from app_public.leads l
  where l.tenant_id = NEW.tenant_id
    and (l.id = NEW.lead_id or (NEW.lead_id is null and l.phone = NEW.to_phone and l.deleted_at is null))
  limit 1;

  for step in 1..60 loop
    v_window := app_public.sms_send_window(NEW.to_phone, v_region, v_timezone, v_at);
    if not v_window.allowed then
      if v_window.next_allowed_at is null then
        raise exception 'Not queued: no legal sending time for % within a week (%)', NEW.to_phone, v_window.reason using errcode = '22023';
      end if;
      v_at := v_window.next_allowed_at;
      continue;
    end if;
    if v_window.max_per_24h is null then
      NEW.scheduled_for := v_at;
      return NEW;
    end if;
    -- The cap holds for every 24-hour period: look at each period that would contain v_at.
    select min(s.start_at + interval '24 hours') into v_cap_hit
    from (
      select m.scheduled_for as start_at
      from app_public.messages m
      where m.tenant_id = NEW.tenant_id and m.to_phone = NEW.to_phone and m.direction = 'outbound'
        and m.purpose in ('marketing', 'nurture') and m.status <> 'canceled'
        and m.scheduled_for > v_at - interval '24 hours' and m.scheduled_for <= v_at
      union all
      select v_at
    ) s
    where (
      select count(*) from app_public.messages m
      where m.tenant_id = NEW.tenant_id and m.to_phone = NEW.to_phone and m.direction = 'outbound'
        and m.purpose in ('marketing', 'nurture') and m.status <> 'canceled'
        and m.scheduled_for >= s.start_at and m.scheduled_for < s.start_at + interval '24 hours'
    ) >= v_window.max_per_24h;
    if v_cap_hit is null then
      NEW.scheduled_for := v_at;
      return NEW;
    end if;
    v_at := greatest(v_cap_hit, v_at + interval '1 second');
  end loop;
  raise exception 'Not queued: the daily cap for % leaves no sending time soon enough', NEW.to_phone using errcode = '22023';
end;
$$;
comment on function app_private.tg_messages__guard_outbound() is $$Trigger (_200_guard_outbound, before insert of outbound messages). THE RULE of is_on_dnc_list, enforced where every text is written: a number on the do-not-contact list gets nothing (SQLSTATE SB001), except the one opt-out confirmation and HELP replies, which the carriers require. Marketing and nurture texts are moved (scheduled_for) to the next moment inside the legal sending hours of the recipient (sms_send_window: federal and state rules, in the recipient’s time zone from the lead, the area code or the state) and to when the strictest per-state cap of messages per 24 hours allows one more; texts in a conversation the customer started are not marketing and go at once. Concurrent queuing to one recipient is serialized by an advisory lock.$$;

create function app_private.tg_messages__enqueue_send() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform graphile_worker.add_job('sms__send', pg_catalog.json_build_object('message_id', NEW.id),
    run_at => NEW.scheduled_for, job_key => 'sms_send:' || NEW.id, max_attempts => 10);
  return null;
end;
$$;
comment on function app_private.tg_messages__enqueue_send() is 'Trigger (_900_enqueue_send, after insert of queued outbound messages): enqueues the sms__send job at scheduled_for, keyed by the message (job key sms_send:<id>).';

create function app_private.tg_messages__count_in_conversation() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  update app_public.conversations c
  set message_count = c.message_count + 1,
      ai_message_count = c.ai_message_count + (NEW.sender = 'ai')::int,
      human_message_count = c.human_message_count + (NEW.sender = 'human')::int,
      last_message_time = NEW.created_at,
      last_customer_message_time = case when NEW.direction = 'inbound' then NEW.created_at else c.last_customer_message_time end,
      last_human_response_time = case when NEW.sender = 'human' then NEW.created_at else c.last_human_response_time end
  where c.tenant_id = NEW.tenant_id and c.id = NEW.conversation_id;
  return null;
end;
$$;
comment on function app_private.tg_messages__count_in_conversation() is 'Trigger (_800_count_in_conversation, after insert on messages with a conversation): keeps the conversation counts and last-message times.';

create trigger _200_guard_outbound before insert on app_public.messages
  for each row when (NEW.direction = 'outbound') execute function app_private.tg_messages__guard_outbound();
create trigger _800_count_in_conversation after insert on app_public.messages
  for each row when (NEW.conversation_id is not null) execute function app_private.tg_messages__count_in_conversation();
create trigger _900_enqueue_send after insert on app_public.messages
  for each row when (NEW.direction = 'outbound' and NEW.status = 'queued') execute function app_private.tg_messages__enqueue_send();

--------------------------------------------------------------------------------
-- Voice webhooks: calls, idempotent on CallSid, status forward-only
--------------------------------------------------------------------------------

create type app_public.inbound_call_answer as (
  call_id uuid,
  tenant_id uuid,
  forward_to text,
  ring_timeout_seconds integer,
  business_name text
);
comment on type app_public.inbound_call_answer is 'What the voice webhook needs to answer a call: where to forward it and for how long it may ring.';
comment on column app_public.inbound_call_answer.call_id is 'The call row.';
comment on column app_public.inbound_call_answer.tenant_id is 'The tenant whose number was called.';
comment on column app_public.inbound_call_answer.forward_to is 'The phone to ring (empty: nobody; the call counts as missed).';
comment on column app_public.inbound_call_answer.ring_timeout_seconds is 'How long it may ring.';
comment on column app_public.inbound_call_answer.business_name is 'The business name (for a spoken message).';

create function app_private.record_inbound_call(call_sid text, from_phone text, to_phone text, call_status text,
    caller_city text default null, caller_state text default null, caller_country text default null)
  returns app_public.inbound_call_answer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_owner record;
  v_call app_public.calls;
  v_answer app_public.inbound_call_answer;
begin
  if record_inbound_call.call_sid is null or record_inbound_call.call_sid !~ '^CA[0-9a-fA-F]{32}$' then
    raise exception 'CallSid must be CA followed by 32 hexadecimal digits, got %', coalesce(pg_catalog.quote_literal(pg_catalog.left(record_inbound_call.call_sid, 40)), 'nothing')
      using errcode = '22023';
  end if;
  if record_inbound_call.from_phone is null or record_inbound_call.from_phone !~ '^\+[1-9][0-9]{6,14}$' then
    raise exception 'From must be a phone number in E.164 form (e.g. +12125551234), got %', coalesce(pg_catalog.quote_literal(pg_catalog.left(record_inbound_call.from_phone, 40)), 'nothing')
      using errcode = '22023';
  end if;
  if record_inbound_call.to_phone is null or record_inbound_call.to_phone !~ '^\+[1-9][0-9]{6,14}$' then
    raise exception 'To must be a phone number in E.164 form (e.g. +12125551234), got %', coalesce(pg_catalog.quote_literal(pg_catalog.left(record_inbound_call.to_phone, 40)), 'nothing')
      using errcode = '22023';
  end if;
  if app_hidden.call_status_rank(coalesce(record_inbound_call.call_status, 'ringing')) is null then
    raise exception 'Unknown CallStatus %', pg_catalog.quote_literal(pg_catalog.left(record_inbound_call.call_status, 40)) using errcode = '22023';
  end if;
  select o.* into v_owner from app_private.number_owner(record_inbound_call.to_phone) o;
  if v_owner.tenant_id is null then
    raise exception 'The number % does not belong to any tenant (no active phone number or tracking number)', record_inbound_call.to_phone
      using errcode = 'P0002';
  end if;

  select s.forward_to_phone, s.ring_timeout_seconds, t.business_name
  into v_answer.forward_to, v_answer.ring_timeout_seconds, v_answer.business_name
  from app_public.tenants t left join app_public.business_settings s on s.tenant_id = t.id
  where t.id = v_owner.tenant_id;
  v_answer.ring_timeout_seconds := coalesce(v_answer.ring_timeout_seconds, 20);
  -- A call to an agent tracking number rings the agent.
  if v_owner.agent_id is not null then
    select coalesce(a.phone, v_answer.forward_to) into v_answer.forward_to
    from app_public.agents a where a.tenant_id = v_owner.tenant_id and a.id = v_owner.agent_id;
  end if;

  insert into app_public.calls (tenant_id, call_sid, phone_number_id, tracking_number_id, agent_id, customer_phone,
    business_phone, status, forwarded_to, caller_city, caller_state, caller_country)
  values (v_owner.tenant_id, record_inbound_call.call_sid, v_owner.phone_number_id, v_owner.tracking_number_id,
    v_owner.agent_id, record_inbound_call.from_phone, record_inbound_call.to_phone,
    coalesce(record_inbound_call.call_status, 'ringing'), v_answer.forward_to,
    nullif(pg_catalog.left(pg_catalog.btrim(record_inbound_call.caller_city), 100), ''),
    nullif(pg_catalog.left(pg_catalog.btrim(record_inbound_call.caller_state), 50), ''),
    coalesce(nullif(pg_catalog.left(pg_catalog.btrim(record_inbound_call.caller_country), 3), ''), 'US'))
  on conflict on constraint calls_call_sid_must_be_unique do nothing
  returning * into v_call;
  if v_call.id is null then
    -- A repeated delivery: answer as the first time did.
    select c.* into v_call from app_public.calls c where c.call_sid = record_inbound_call.call_sid;
    v_answer.forward_to := v_call.forwarded_to;
  end if;
  v_answer.call_id := v_call.id;
  v_answer.tenant_id := v_call.tenant_id;
  return v_answer;
end;
$$;
comment on function app_private.record_inbound_call(text, text, text, text, text, text, text) is $$The incoming-call webhook: records the call once per CallSid (a repeated delivery changes nothing and gets the same answer) and says where to forward it: the business phone of business_settings, or the phone of the agent whose tracking number was called. Errors: 22023 a malformed CallSid, number or status; P0002 a number that belongs to no tenant.$$;

create function app_private.record_call_status(call_sid text, from_phone text, to_phone text, call_status text,
    duration integer default null, dial_status text default null, dial_duration integer default null,
    out call_id uuid, out missed boolean)
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_call app_public.calls;
  v_threshold integer;
  v_missed boolean;
begin
  if record_call_status.call_status is not null and app_hidden.call_status_rank(record_call_status.call_status) is null then
    raise exception 'Unknown CallStatus %', pg_catalog.quote_literal(pg_catalog.left(record_call_status.call_status, 40)) using errcode = '22023';
  end if;
  if record_call_status.dial_status is not null
     and record_call_status.dial_status not in ('completed', 'answered', 'busy', 'failed', 'no-answer', 'canceled') then
    raise exception 'Unknown DialCallStatus %', pg_catalog.quote_literal(pg_catalog.left(record_call_status.dial_status, 40)) using errcode = '22023';
  end if;
  if record_call_status.duration < 0 or record_call_status.dial_duration < 0 then
    raise exception 'Call durations cannot be negative' using errcode = '22023';
  end if;
  select c.* into v_call from app_public.calls c where c.call_sid = record_call_status.call_sid for update;
  if not found then
    -- The status arrived before (or without) the incoming-call webhook: record the call from it.
    perform app_private.record_inbound_call(record_call_status.call_sid, record_call_status.from_phone,
      record_call_status.to_phone, 'ringing');
    select c.* into v_call from app_public.calls c where c.call_sid = record_call_status.call_sid for update;
  end if;

  update app_public.calls c
  set status = case when app_hidden.call_status_rank(c.status) < 3
                     and app_hidden.call_status_rank(coalesce(record_call_status.call_status, c.status)) > app_hidden.call_status_rank(c.status)
                    then record_call_status.call_status else c.status end,
      duration = greatest(c.duration, coalesce(record_call_status.duration, 0)),
      dial_status = coalesce(c.dial_status, record_call_status.dial_status),
      dial_duration = coalesce(c.dial_duration, record_call_status.dial_duration),
      end_time = case when c.end_time is null and app_hidden.call_status_rank(coalesce(record_call_status.call_status, c.status)) = 3
                      then now() else c.end_time end
  where c.id = v_call.id
  returning * into v_call;

  call_id := v_call.id;
  missed := v_call.missed;
  if v_call.missed is not null then
    return;
  end if;
  -- Decide once: from the forwarded leg when it is known, else when the call has ended.
  select coalesce(s.missed_call_threshold_seconds, 10) into v_threshold
  from app_public.tenants t left join app_public.business_settings s on s.tenant_id = t.id where t.id = v_call.tenant_id;
  if v_call.dial_status is not null then
    v_missed := v_call.dial_status not in ('completed', 'answered') or coalesce(v_call.dial_duration, 0) < v_threshold;
  elsif app_hidden.call_status_rank(v_call.status) = 3 then
    -- No forwarded leg was reported: nobody was rung, or the caller hung up while it rang.
    v_missed := true;
  else
    return;
  end if;
  update app_public.calls c set missed = v_missed where c.id = v_call.id;
  missed := v_missed;
  if v_missed then
    perform graphile_worker.add_job('call__process_missed', pg_catalog.json_build_object('call_id', v_call.id),
      job_key => 'call_missed:' || v_call.id);
  end if;
end;
$$;
comment on function app_private.record_call_status(text, text, text, text, integer, text, integer) is $$The call-status and dial-result webhooks: CallStatus only moves forward (a late ringing never overwrites completed), the first reported outcome of the forwarded leg is kept, and the call is judged once: missed when the forwarded leg was not answered (busy, no-answer, failed, canceled), was answered for less than missed_call_threshold_seconds, or when the call ended without a forwarded leg. A missed call enqueues call__process_missed. A status for an unknown CallSid records the call first. Errors: 22023 malformed values; P0002 a number of no tenant.$$;

create function app_private.process_missed_call(call_id uuid) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_call app_public.calls;
  v_settings app_public.business_settings;
  v_lead record;
  v_conversation record;
  v_message app_public.messages;
begin
  update app_public.calls c
  set processed = true, processed_at = now()
  where c.id = process_missed_call.call_id and c.missed and not c.processed
  returning * into v_call;
  if not found then
    return false;
  end if;
  select s.* into v_settings from app_public.business_settings s where s.tenant_id = v_call.tenant_id;
  select l.* into v_lead from app_private.caller_lead(v_call.tenant_id, v_call.customer_phone, 'missed_call',
    v_call.agent_id, v_call.caller_city, v_call.caller_state) l;
  select c.* into v_conversation from app_private.caller_conversation(v_call.tenant_id, v_call.customer_phone,
    v_call.business_phone, v_call.phone_number_id, v_call.agent_id, v_call.id, v_lead.lead_id) c;

  if coalesce(v_settings.auto_response_enabled, true)
     and not exists (select 1 from app_public.dnc_list d where d.tenant_id = v_call.tenant_id and d.phone = v_call.customer_phone) then
    v_message := app_private.queue_message(v_call.tenant_id, v_call.customer_phone, v_call.business_phone,
      app_hidden.fill_sms_template(coalesce(v_settings.auto_response_message, 'Hi! Sorry we missed your call. How can we help?'), v_call.tenant_id),
      'auto_response', 'system', v_conversation.conversation_id, v_lead.lead_id, 'missed_call:' || v_call.call_sid);
  end if;

  update app_public.calls c
  set lead_id = v_lead.lead_id,
      lead_created = v_lead.created,
      conversation_id = v_conversation.conversation_id,
      conversation_created = v_conversation.created,
      sms_triggered = v_message.id is not null
  where c.id = v_call.id;
  return true;
end;
$$;
comment on function app_private.process_missed_call(uuid) is $$Handles a missed call exactly once (the processed flag is claimed first; a second run returns false), in one transaction: finds or creates the lead of the caller (source missed_call, attributed to the agent of a tracking number), finds or starts the conversation, and queues the automatic reply of business_settings unless it is turned off or the caller is on the do-not-contact list. Run by the call__process_missed job.$$;

--------------------------------------------------------------------------------
-- Inbound texts: idempotent on MessageSid; keywords; conversation, lead and AI scheduling
--------------------------------------------------------------------------------

create function app_private.takeover_user_id(tenant_id uuid, lead_id uuid) returns uuid
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select coalesce(
    (select l.owner_user_id from app_public.leads l where l.tenant_id = takeover_user_id.tenant_id and l.id = takeover_user_id.lead_id),
    (select m.user_id from app_public.memberships m
     where m.tenant_id = takeover_user_id.tenant_id and m.role = 'owner' order by m.created_at, m.user_id limit 1))
$$;
comment on function app_private.takeover_user_id(uuid, uuid) is 'The person who answers a conversation: the owner of the lead when it has one, else the first owner of the tenant. Their ai_takeover_delay and notification preferences apply.';

create function app_private.record_opt_out(tenant_id uuid, customer_phone text, business_phone text, keyword text,
    message_id uuid) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_new boolean;
  v_settings app_public.business_settings;
begin
  insert into app_public.dnc_list (tenant_id, phone, reason, source)
  values (record_opt_out.tenant_id, record_opt_out.customer_phone,
    pg_catalog.format('Texted %s to %s', coalesce(record_opt_out.keyword, 'an opt-out word'), record_opt_out.business_phone), 'sms_opt_out')
  on conflict on constraint dnc_list_phone_must_be_unique_per_tenant do nothing;
  v_new := found;
  insert into app_public.sms_consent_events (tenant_id, phone, event, source, keyword, message_id)
  values (record_opt_out.tenant_id, record_opt_out.customer_phone, 'opt_out', 'sms_keyword', record_opt_out.keyword, record_opt_out.message_id);
  -- Nothing still waiting may go out: queued texts are canceled (a text a worker is handing to the provider
  -- at this instant cannot be called back; claim_outbound_message checks the list again just before sending).
  update app_public.messages m
  set status = 'canceled', failed_at = now(), error_message = 'Canceled: the recipient opted out'
  where m.tenant_id = record_opt_out.tenant_id and m.to_phone = record_opt_out.customer_phone
    and m.direction = 'outbound' and m.status = 'queued';
  update app_public.conversations c
  set status = 'opted_out', outcome = coalesce(c.outcome, 'opted_out'), ai_active = false
  where c.tenant_id = record_opt_out.tenant_id and c.customer_phone = record_opt_out.customer_phone and c.status = 'active';
  if v_new then
    select s.* into v_settings from app_public.business_settings s where s.tenant_id = record_opt_out.tenant_id;
    perform app_private.queue_message(record_opt_out.tenant_id, record_opt_out.customer_phone, record_opt_out.business_phone,
      app_hidden.fill_sms_template(coalesce(v_settings.opt_out_confirmation_message,
        '[BUSINESS]: you are unsubscribed and will get no more texts from us. Reply START to subscribe again.'), record_opt_out.tenant_id),
      'opt_out_confirmation', 'system', null, null, 'opt_out_confirmation:' || record_opt_out.message_id);
  end if;
  return v_new;
end;
$$;
comment on function app_private.record_opt_out(uuid, text, text, text, uuid) is $$An opt-out (STOP and the other opt-out words): the number joins the do-not-contact list at once (source sms_opt_out), the consent event is recorded, every queued text to it is canceled, its active conversations end (opted_out, AI off), and exactly one confirmation is queued (none when the number was already on the list). Nurture steps read the same list before every send. Returns true when the number was newly added.$$;

create function app_private.record_opt_in(tenant_id uuid, customer_phone text, business_phone text, keyword text,
    message_id uuid) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_settings app_public.business_settings;
begin
  delete from app_public.dnc_list d
  where d.tenant_id = record_opt_in.tenant_id and d.phone = record_opt_in.customer_phone and d.source = 'sms_opt_out';
  if not found then
    return false;
  end if;
  insert into app_public.sms_consent_events (tenant_id, phone, event, source, keyword, message_id)
  values (record_opt_in.tenant_id, record_opt_in.customer_phone, 'opt_in', 'sms_keyword', record_opt_in.keyword, record_opt_in.message_id);
  select s.* into v_settings from app_public.business_settings s where s.tenant_id = record_opt_in.tenant_id;
  perform app_private.queue_message(record_opt_in.tenant_id, record_opt_in.customer_phone, record_opt_in.business_phone,
    app_hidden.fill_sms_template(coalesce(v_settings.opt_in_confirmation_message,
      '[BUSINESS]: you are subscribed again. Reply HELP for help, STOP to opt out.'), record_opt_in.tenant_id),
    'opt_in_confirmation', 'system', null, null, 'opt_in_confirmation:' || record_opt_in.message_id);
  return true;
end;
$$;
comment on function app_private.record_opt_in(uuid, text, text, text, uuid) is $$An opt-in (START, UNSTOP, YES) from a number that opted out by text: its sms_opt_out entry leaves the do-not-contact list, the consent event is recorded and a confirmation is queued. Returns false, changing nothing, when the number had not opted out by text (a YES is then an ordinary answer; a number a manager blocked stays blocked).$$;

create function app_private.record_inbound_message(message_sid text, from_phone text, to_phone text, body text,
    num_media integer default 0, out message_id uuid, out tenant_id uuid, out keyword text, out duplicate boolean)
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_owner record;
  v_lead record;
  v_conversation record;
  v_conv app_public.conversations;
  v_settings app_public.business_settings;
  v_user uuid;
  v_delay integer;
begin
  if record_inbound_message.message_sid is null or record_inbound_message.message_sid !~ '^(SM|MM)[0-9a-fA-F]{32}$' then
    raise exception 'MessageSid must be SM or MM followed by 32 hexadecimal digits, got %', coalesce(pg_catalog.quote_literal(pg_catalog.left(record_inbound_message.message_sid, 40)), 'nothing')
      using errcode = '22023';
  end if;
  if record_inbound_message.from_phone is null or record_inbound_message.from_phone !~ '^\+[1-9][0-9]{6,14}$' then
    raise exception 'From must be a phone number in E.164 form (e.g. +12125551234), got %', coalesce(pg_catalog.quote_literal(pg_catalog.left(record_inbound_message.from_phone, 40)), 'nothing')
      using errcode = '22023';
  end if;
  if record_inbound_message.to_phone is null or record_inbound_message.to_phone !~ '^\+[1-9][0-9]{6,14}$' then
    raise exception 'To must be a phone number in E.164 form (e.g. +12125551234), got %', coalesce(pg_catalog.quote_literal(pg_catalog.left(record_inbound_message.to_phone, 40)), 'nothing')
      using errcode = '22023';
  end if;
  if record_inbound_message.body is null then
    raise exception 'Body is missing' using errcode = '22023';
  end if;
  if pg_catalog.length(record_inbound_message.body) > 100000 then
    raise exception 'Body is too long: % characters (at most 100000)', pg_catalog.length(record_inbound_message.body) using errcode = '22023';
  end if;
  -- Deliveries of the same MessageSid wait for each other, so only the first one acts.
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('sms-in:' || record_inbound_message.message_sid, 0));
  select m.id, m.tenant_id into message_id, tenant_id from app_public.messages m where m.message_sid = record_inbound_message.message_sid;
  if found then
    duplicate := true;
    return;
  end if;
  duplicate := false;
  select o.* into v_owner from app_private.number_owner(record_inbound_message.to_phone) o;
  if v_owner.tenant_id is null then
    raise exception 'The number % does not belong to any tenant (no active phone number or tracking number)', record_inbound_message.to_phone
      using errcode = 'P0002';
  end if;
  tenant_id := v_owner.tenant_id;
  keyword := app_public.sms_keyword(record_inbound_message.body);

  if keyword = 'opt_out' then
    -- An opt-out starts no conversation and no lead; it joins the conversation that is open, if one is.
    select c.* into v_conv from app_public.conversations c
    where c.tenant_id = v_owner.tenant_id and c.customer_phone = record_inbound_message.from_phone
      and c.business_phone = record_inbound_message.to_phone and c.status = 'active'
    for update;
    insert into app_public.messages (tenant_id, conversation_id, lead_id, direction, sender, purpose, from_phone, to_phone,
      body, message_sid, status, processed, intent, num_media)
    values (v_owner.tenant_id, v_conv.id, v_conv.lead_id, 'inbound', 'customer', 'conversation', record_inbound_message.from_phone,
      record_inbound_message.to_phone, record_inbound_message.body, record_inbound_message.message_sid, 'received', true, 'opt_out',
      coalesce(record_inbound_message.num_media, 0))
    returning id into message_id;
    perform app_private.record_opt_out(v_owner.tenant_id, record_inbound_message.from_phone, record_inbound_message.to_phone,
      pg_catalog.upper(pg_catalog.left(pg_catalog.btrim(record_inbound_message.body), 20)), message_id);
    return;
  end if;

  select l.* into v_lead from app_private.caller_lead(v_owner.tenant_id, record_inbound_message.from_phone, 'inbound_sms',
    v_owner.agent_id, null, null) l;
  select c.* into v_conversation from app_private.caller_conversation(v_owner.tenant_id, record_inbound_message.from_phone,
    record_inbound_message.to_phone, v_owner.phone_number_id, v_owner.agent_id, null, v_lead.lead_id) c;
  insert into app_public.messages (tenant_id, conversation_id, lead_id, direction, sender, purpose, from_phone, to_phone,
    body, message_sid, status, processed, intent, num_media)
  values (v_owner.tenant_id, v_conversation.conversation_id, v_lead.lead_id, 'inbound', 'customer', 'conversation',
    record_inbound_message.from_phone, record_inbound_message.to_phone, record_inbound_message.body,
    record_inbound_message.message_sid, 'received', true, keyword, coalesce(record_inbound_message.num_media, 0))
  returning id into message_id;

  if keyword = 'help' then
    select s.* into v_settings from app_public.business_settings s where s.tenant_id = v_owner.tenant_id;
    perform app_private.queue_message(v_owner.tenant_id, record_inbound_message.from_phone, record_inbound_message.to_phone,
      app_hidden.fill_sms_template(coalesce(v_settings.sms_help_message,
        '[BUSINESS]: reply to this number and we will get back to you. Msg & data rates may apply. Reply STOP to opt out.'), v_owner.tenant_id),
      'help', 'system', v_conversation.conversation_id, v_lead.lead_id, 'help:' || record_inbound_message.message_sid);
    return;
  end if;
  if keyword = 'opt_in' and app_private.record_opt_in(v_owner.tenant_id, record_inbound_message.from_phone,
       record_inbound_message.to_phone, pg_catalog.upper(pg_catalog.left(pg_catalog.btrim(record_inbound_message.body), 20)), message_id) then
    return;
  end if;

  -- An ordinary message: the AI answers at once when it has the conversation; else it takes over after the delay.
  select c.* into v_conv from app_public.conversations c where c.id = v_conversation.conversation_id;
  if v_conv.ai_active then
    perform graphile_worker.add_job('conversation__ai_turn', pg_catalog.json_build_object('conversation_id', v_conv.id),
      job_key => 'ai_turn:' || v_conv.id);
  elsif not v_conv.human_active then
    select s.* into v_settings from app_public.business_settings s where s.tenant_id = v_owner.tenant_id;
    if coalesce(v_settings.ai_enabled, true) then
      v_user := app_private.takeover_user_id(v_owner.tenant_id, v_lead.lead_id);
      select p.ai_takeover_delay into v_delay from app_public.user_preferences p where p.user_id = v_user;
      perform graphile_worker.add_job('conversation__ai_takeover', pg_catalog.json_build_object('conversation_id', v_conv.id),
        run_at => now() + pg_catalog.make_interval(secs => coalesce(v_delay, 60)),
        job_key => 'ai_takeover:' || v_conv.id, job_key_mode => 'preserve_run_at');
    end if;
  end if;
end;
$$;
comment on function app_private.record_inbound_message(text, text, text, text, integer) is $$The incoming-text webhook, once per MessageSid (repeated or concurrent deliveries wait for the first and change nothing; duplicate is then true). STOP and the other opt-out words: record_opt_out. HELP or INFO: the help text of the tenant is queued. START, UNSTOP or YES from a number that opted out: record_opt_in. Any other text: the lead (source inbound_sms) and the active conversation are found or created, the message is stored, and the AI either answers at once (it has the conversation) or is scheduled to take over after the ai_takeover_delay of the person who owns the lead (unless a person already answers, or ai_enabled is off). Errors: 22023 a malformed MessageSid, number, or a body over 100000 characters; P0002 a number of no tenant.$$;

--------------------------------------------------------------------------------
-- Outbound lifecycle: claim, sent, failed, retry, provider status, reconciliation
--------------------------------------------------------------------------------

create function app_private.apply_message_status(message_id uuid, message_sid text, status text,
    error_code integer default null, error_message text default null) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_status text := case apply_message_status.status
    when 'accepted' then 'sent' when 'scheduled' then 'sent' when 'queued' then 'sent' when 'sending' then 'sent'
    when 'sent' then 'sent' when 'delivered' then 'delivered' when 'read' then 'delivered'
    when 'undelivered' then 'undelivered' when 'failed' then 'failed' when 'canceled' then 'canceled' end;
  v_id uuid;
begin
  if v_status is null then
    raise exception 'Unknown MessageStatus %', coalesce(pg_catalog.quote_literal(pg_catalog.left(apply_message_status.status, 40)), 'nothing')
      using errcode = '22023';
  end if;
  if apply_message_status.message_sid is null or apply_message_status.message_sid !~ '^(SM|MM)[0-9a-fA-F]{32}$' then
    raise exception 'MessageSid must be SM or MM followed by 32 hexadecimal digits' using errcode = '22023';
  end if;
  select m.id into v_id from app_public.messages m
  where m.message_sid = apply_message_status.message_sid and m.direction = 'outbound' for update;
  if v_id is null and apply_message_status.message_id is not null then
    -- The report came before the worker recorded the provider id: the callback URL names our message.
    select m.id into v_id from app_public.messages m
    where m.id = apply_message_status.message_id and m.direction = 'outbound' and m.message_sid is null for update;
  end if;
  if v_id is null then
    raise exception 'No outbound message %', apply_message_status.message_sid using errcode = 'P0002';
  end if;
  update app_public.messages m
  set message_sid = coalesce(m.message_sid, apply_message_status.message_sid),
      provider_status = apply_message_status.status,
      status = v_status,
      sent_at = coalesce(m.sent_at, now()),
      delivered_at = case when v_status = 'delivered' then now() else m.delivered_at end,
      failed_at = case when v_status in ('undelivered', 'failed', 'canceled') then now() else m.failed_at end,
      error_code = coalesce(apply_message_status.error_code, m.error_code),
      error_message = coalesce(apply_message_status.error_message, m.error_message)
  where m.id = v_id
    and app_hidden.message_status_rank(m.status) < 3
    and app_hidden.message_status_rank(v_status) > app_hidden.message_status_rank(m.status);
  return found;
end;
$$;
comment on function app_private.apply_message_status(uuid, text, text, integer, text) is $$The message-status webhook: maps the provider status (accepted, queued, sending, sent → sent; delivered, read → delivered; undelivered; failed; canceled) and applies it only when it moves the message forward; a final status (delivered, undelivered, failed, canceled) never changes, so a late "sent" never overwrites "delivered". Returns whether anything changed. Errors: 22023 an unknown status or malformed MessageSid; P0002 no such outbound message.$$;

create function app_private.claim_outbound_message(message_id uuid) returns app_public.messages
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_message app_public.messages;
  v_region text;
  v_timezone text;
  v_window app_public.sms_window;
begin
  select m.* into v_message from app_public.messages m
  where m.id = claim_outbound_message.message_id and m.direction = 'outbound' for update;
  if not found or v_message.status <> 'queued' then
    return null;
  end if;
  if v_message.scheduled_for > now() + interval '1 second' then
    perform graphile_worker.add_job('sms__send', pg_catalog.json_build_object('message_id', v_message.id),
      run_at => v_message.scheduled_for, job_key => 'sms_send:' || v_message.id, max_attempts => 10);
    return null;
  end if;
  -- Consent is checked again at the last moment: the customer may have opted out since queuing.
  if v_message.purpose not in ('opt_out_confirmation', 'help')
     and exists (select 1 from app_public.dnc_list d where d.tenant_id = v_message.tenant_id and d.phone = v_message.to_phone) then
    update app_public.messages m
    set status = 'canceled', failed_at = now(), error_message = 'Canceled: the number is on the do-not-contact list (checked again before sending)'
    where m.id = v_message.id;
    return null;
  end if;
  if v_message.purpose in ('marketing', 'nurture') then
    select l.region, l.timezone into v_region, v_timezone from app_public.leads l
    where l.tenant_id = v_message.tenant_id and l.id = v_message.lead_id;
    v_window := app_public.sms_send_window(v_message.to_phone, v_region, v_timezone, now());
    if not v_window.allowed then
      update app_public.messages m set scheduled_for = coalesce(v_window.next_allowed_at, now() + interval '1 hour') where m.id = v_message.id
      returning m.* into v_message;
      perform graphile_worker.add_job('sms__send', pg_catalog.json_build_object('message_id', v_message.id),
        run_at => v_message.scheduled_for, job_key => 'sms_send:' || v_message.id, max_attempts => 10);
      return null;
    end if;
  end if;
  update app_public.messages m
  set status = 'sending', sending_at = now(), attempts = m.attempts + 1
  where m.id = v_message.id
  returning m.* into v_message;
  return v_message;
end;
$$;
comment on function app_private.claim_outbound_message(uuid) is $$Step 1 of sending (sms__send), committed before the provider is called: a queued message due now becomes sending and is returned. Nothing (null) when it is not queued any more, not due yet (its job is moved), its number has joined the do-not-contact list since (canceled), or a marketing or nurture text is outside the sending hours by now (moved). A message left in sending by a crash is not sent again blindly: sweep_outbox hands it to reconciliation, which asks the provider first.$$;

create function app_private.record_message_sent(message_id uuid, message_sid text, provider_status text) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  update app_public.messages m
  set message_sid = coalesce(m.message_sid, record_message_sent.message_sid),
      provider_status = coalesce(m.provider_status, record_message_sent.provider_status),
      status = case when m.status in ('queued', 'sending') then 'sent' else m.status end,
      sent_at = coalesce(m.sent_at, now())
  where m.id = record_message_sent.message_id and m.direction = 'outbound';
  return found;
end;
$$;
comment on function app_private.record_message_sent(uuid, text, text) is 'Step 2 of sending: the provider accepted the message; its id is recorded and the status becomes sent (unless a delivery report already moved it further).';

create function app_private.record_message_failed(message_id uuid, error_code integer, error_message text) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  update app_public.messages m
  set status = 'failed', failed_at = now(), error_code = record_message_failed.error_code,
      error_message = pg_catalog.left(record_message_failed.error_message, 1000)
  where m.id = record_message_failed.message_id and m.direction = 'outbound' and m.status in ('queued', 'sending');
  return found;
end;
$$;
comment on function app_private.record_message_failed(uuid, integer, text) is 'Step 2 of sending when the provider refused the message for good (e.g. 21211 invalid number, 21610 the recipient unsubscribed at the carrier): failed, with the error.';

create function app_private.release_message_for_retry(message_id uuid, error_message text, delay_seconds integer)
  returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_at timestamptz := now() + pg_catalog.make_interval(secs => greatest(coalesce(release_message_for_retry.delay_seconds, 30), 1));
begin
  update app_public.messages m
  set status = 'queued', scheduled_for = v_at, error_message = pg_catalog.left(release_message_for_retry.error_message, 1000)
  where m.id = release_message_for_retry.message_id and m.status = 'sending';
  if not found then
    return false;
  end if;
  perform graphile_worker.add_job('sms__send', pg_catalog.json_build_object('message_id', release_message_for_retry.message_id),
    run_at => v_at, job_key => 'sms_send:' || release_message_for_retry.message_id, max_attempts => 10);
  return true;
end;
$$;
comment on function app_private.release_message_for_retry(uuid, text, integer) is 'Step 2 of sending when the provider certainly did not take the message (e.g. HTTP 429, too many requests): back to queued, tried again after delay_seconds.';

create function app_private.reconcile_message(message_id uuid, message_sid text, provider_status text,
    error_code integer default null, error_message text default null) returns text
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_message app_public.messages;
begin
  select m.* into v_message from app_public.messages m where m.id = reconcile_message.message_id for update;
  if not found or v_message.status <> 'sending' then
    return coalesce(v_message.status, 'missing');
  end if;
  if reconcile_message.message_sid is null then
    -- The provider has no such message: it never left, so sending it now is its first and only send.
    update app_public.messages m
    set status = 'queued', scheduled_for = now(),
        error_message = 'The sending worker stopped before the provider took it (the provider has no such message): queued again'
    where m.id = v_message.id;
    perform graphile_worker.add_job('sms__send', pg_catalog.json_build_object('message_id', v_message.id),
      job_key => 'sms_send:' || v_message.id, max_attempts => 10);
    return 'queued';
  end if;
  perform app_private.record_message_sent(v_message.id, reconcile_message.message_sid, reconcile_message.provider_status);
  if reconcile_message.provider_status is not null then
    perform app_private.apply_message_status(v_message.id, reconcile_message.message_sid, reconcile_message.provider_status,
      reconcile_message.error_code, reconcile_message.error_message);
  end if;
  select m.status into v_message.status from app_public.messages m where m.id = v_message.id;
  return v_message.status;
end;
$$;
comment on function app_private.reconcile_message(uuid, text, text, integer, text) is $$Settles a message left in sending (its worker stopped, or the answer of the provider was lost) from what the provider itself reports, never blindly: when the provider has the message (message_sid given), ours takes its id and status and is never sent again; when the provider has no such message, it never left, and it is queued again for its first send. Returns the resulting status.$$;

create function app_private.sweep_outbox(grace interval default interval '10 minutes', out requeued integer, out to_reconcile integer)
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_message record;
begin
  requeued := 0;
  to_reconcile := 0;
  for v_message in
    select m.id from app_public.messages m
    where m.status = 'queued' and m.scheduled_for <= now() - sweep_outbox.grace
    order by m.scheduled_for
    limit 5000
  loop
    perform graphile_worker.add_job('sms__send', pg_catalog.json_build_object('message_id', v_message.id),
      job_key => 'sms_send:' || v_message.id, max_attempts => 10);
    requeued := requeued + 1;
  end loop;
  for v_message in
    select m.id from app_public.messages m
    where m.status = 'sending' and m.sending_at <= now() - sweep_outbox.grace
    order by m.sending_at
    limit 5000
  loop
    perform graphile_worker.add_job('sms__reconcile', pg_catalog.json_build_object('message_id', v_message.id),
      job_key => 'sms_reconcile:' || v_message.id, max_attempts => 10);
    to_reconcile := to_reconcile + 1;
  end loop;
end;
$$;
comment on function app_private.sweep_outbox(interval) is $$Finds outbox rows a stopped worker left behind (run every minute by the sms__sweep cron task, and at worker start): queued messages overdue by more than grace get their sms__send job again (a duplicate job is harmless: only one claim succeeds); messages in sending for more than grace get an sms__reconcile job, which asks the provider before anything is sent again. The grace must exceed the provider timeout, so that a send still under way is not taken for a lost one.$$;

--------------------------------------------------------------------------------
-- For API clients: human replies, texts to a lead, phone numbers
--------------------------------------------------------------------------------

create function app_public.send_conversation_reply(conversation_id uuid, body text, idempotency_key text default null)
  returns app_public.messages
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('agent', 'reply to conversations');
  v_conv app_public.conversations;
  v_message app_public.messages;
begin
  select c.* into v_conv from app_public.conversations c
  where c.tenant_id = v_tenant_id and c.id = send_conversation_reply.conversation_id
  for update;
  if not found then
    raise exception 'No conversation % in this tenant', send_conversation_reply.conversation_id using errcode = 'P0002';
  end if;
  if v_conv.status <> 'active' then
    raise exception 'This conversation is % : it takes no more replies', replace(v_conv.status, '_', ' ') using errcode = '22023';
  end if;
  v_message := app_private.queue_message(v_tenant_id, v_conv.customer_phone, v_conv.business_phone, send_conversation_reply.body,
    'conversation', 'human', v_conv.id, v_conv.lead_id, send_conversation_reply.idempotency_key);
  update app_public.conversations c
  set human_active = true, ai_active = false, human_takeover_time = coalesce(c.human_takeover_time, now())
  where c.id = v_conv.id;
  return v_message;
end;
$$;
comment on function app_public.send_conversation_reply(uuid, text, text) is $$Answers a customer in a conversation as a person of the business (any member). The text is queued at once (a reply in a conversation the customer started is not marketing) and the AI assistant stops for this conversation. idempotency_key (optional) makes a retried call return the first message. Errors: P0002 no such conversation; 22023 the conversation is closed or opted out, an empty body or one over 1600 characters; SB001 the number is on the do-not-contact list; 42501 not a member.$$;

create function app_public.queue_sms(lead_id uuid, body text, purpose text default 'marketing', idempotency_key text default null)
  returns app_public.messages
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('agent', 'send texts');
  v_lead app_public.leads;
  v_from text;
begin
  if queue_sms.purpose is null or queue_sms.purpose not in ('marketing', 'notification') then
    raise exception 'purpose must be marketing or notification, got %', coalesce(pg_catalog.quote_literal(queue_sms.purpose), 'nothing')
      using errcode = '22023';
  end if;
  select l.* into v_lead from app_public.leads l
  where l.tenant_id = v_tenant_id and l.id = queue_sms.lead_id and l.deleted_at is null;
  if not found then
    raise exception 'No lead % in this tenant', queue_sms.lead_id using errcode = 'P0002';
  end if;
  if v_lead.phone is null then
    raise exception 'This lead has no phone number to text' using errcode = '22023';
  end if;
  select p.phone_number into v_from from app_public.phone_numbers p
  where p.tenant_id = v_tenant_id and p.status = 'active' and 'sms' = any (p.capabilities)
  order by p.date_provisioned, p.id limit 1;
  if v_from is null then
    raise exception 'This business has no active phone number that can text: request one with requestPhoneNumber first'
      using errcode = '22023';
  end if;
  return app_private.queue_message(v_tenant_id, v_lead.phone, v_from, queue_sms.body, queue_sms.purpose, 'human', null,
    v_lead.id, queue_sms.idempotency_key);
end;
$$;
comment on function app_public.queue_sms(uuid, text, text, text) is $$Queues a text to a lead from the first active number of the business (any member). purpose marketing (default) is held to the legal sending hours of the recipient and the per-state daily cap: the returned message says in scheduled_for when it will go. idempotency_key (optional) makes a retried call return the first message. Errors: SB001 the number is on the do-not-contact list; 22023 no phone, no active number, an empty body or one over 1600 characters, an unknown purpose; P0002 no such lead; 42501 not a member.$$;

create function app_public.request_phone_number(area_code text, friendly_name text default null)
  returns app_public.phone_numbers
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('admin', 'request phone numbers');
  v_number app_public.phone_numbers;
begin
  if request_phone_number.area_code is null or request_phone_number.area_code !~ '^[2-9][0-9]{2}$' then
    raise exception 'area_code must be 3 digits, the first 2 to 9 (e.g. 305), got %', coalesce(pg_catalog.quote_literal(request_phone_number.area_code), 'nothing')
      using errcode = '22023';
  end if;
  insert into app_public.phone_numbers (tenant_id, area_code, friendly_name, status)
  values (v_tenant_id, request_phone_number.area_code,
    coalesce(nullif(pg_catalog.btrim(request_phone_number.friendly_name), ''), (select t.business_name from app_public.tenants t where t.id = v_tenant_id)),
    'provisioning')
  returning * into v_number;
  perform app_private.add_job('phone_number__provision', pg_catalog.json_build_object('phone_number_id', v_number.id),
    job_key => 'provision:' || v_number.id);
  return v_number;
end;
$$;
comment on function app_public.request_phone_number(text, text) is $$Asks for a new local number in an area code (owners and admins). The row starts as provisioning; the phone_number__provision job buys a number with voice and SMS, points its webhooks at Switchboard, creates its Messaging Service, and makes it active (or failed, with status_reason). Errors: 22023 a malformed area code; 42501 not an owner or admin.$$;

create function app_private.complete_phone_number_provisioning(phone_number_id uuid, details jsonb) returns app_public.phone_numbers
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_number app_public.phone_numbers;
begin
  update app_public.phone_numbers p
  set phone_number = details ->> 'phone_number',
      phone_number_sid = details ->> 'phone_number_sid',
      friendly_name = coalesce(details ->> 'friendly_name', p.friendly_name),
      region = coalesce(details ->> 'region', p.region),
      capabilities = coalesce(array(select pg_catalog.jsonb_array_elements_text(details -> 'capabilities')), p.capabilities),
      webhooks_configured = coalesce((details ->> 'webhooks_configured')::boolean, false),
      voice_webhook_url = details ->> 'voice_webhook_url',
      sms_webhook_url = details ->> 'sms_webhook_url',
      status_callback_url = details ->> 'status_callback_url',
      messaging_service_sid = details #>> '{messaging_service,sid}',
      status = 'active',
      status_reason = case when coalesce((details ->> 'webhooks_configured')::boolean, false) then null
                           else 'Bought, but its webhooks could not be set: calls and texts will not reach Switchboard until they are' end,
      date_provisioned = now()
  where p.id = complete_phone_number_provisioning.phone_number_id and p.status = 'provisioning'
  returning * into v_number;
  if not found then
    return null;
  end if;
  if details -> 'messaging_service' is not null and details -> 'messaging_service' <> 'null'::jsonb then
    insert into app_public.messaging_services (phone_number_id, tenant_id, messaging_service_sid, friendly_name,
      inbound_webhook_url, status_callback)
    values (v_number.id, v_number.tenant_id, details #>> '{messaging_service,sid}',
      coalesce(details #>> '{messaging_service,friendly_name}', v_number.friendly_name, v_number.phone_number),
      v_number.sms_webhook_url, details #>> '{messaging_service,status_callback}');
  end if;
  return v_number;
end;
$$;
comment on function app_private.complete_phone_number_provisioning(uuid, jsonb) is 'The provisioning job records what it bought: phone_number, phone_number_sid, friendly_name, region, capabilities, webhooks_configured, the three webhook URLs and messaging_service {sid, friendly_name, status_callback}. Only a row still provisioning changes (a retried job does nothing); returns null otherwise.';

create function app_private.fail_phone_number_provisioning(phone_number_id uuid, reason text) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  update app_public.phone_numbers p
  set status = 'failed', status_reason = pg_catalog.left(fail_phone_number_provisioning.reason, 1000)
  where p.id = fail_phone_number_provisioning.phone_number_id and p.status = 'provisioning';
  return found;
end;
$$;
comment on function app_private.fail_phone_number_provisioning(uuid, text) is 'The provisioning job could not buy a number (e.g. none left in the area code): the row becomes failed with the reason in words.';

--------------------------------------------------------------------------------
-- The AI takeover
--------------------------------------------------------------------------------

create function app_private.ai_takeover(conversation_id uuid) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_conv app_public.conversations;
begin
  select c.* into v_conv from app_public.conversations c where c.id = ai_takeover.conversation_id for update;
  if not found or v_conv.status <> 'active' or v_conv.human_active or v_conv.ai_active then
    return false;
  end if;
  if not coalesce((select s.ai_enabled from app_public.business_settings s where s.tenant_id = v_conv.tenant_id), true) then
    return false;
  end if;
  update app_public.conversations c set ai_active = true, ai_handoff_time = now() where c.id = v_conv.id;
  perform graphile_worker.add_job('conversation__ai_turn', pg_catalog.json_build_object('conversation_id', v_conv.id),
    job_key => 'ai_turn:' || v_conv.id);
  return true;
end;
$$;
comment on function app_private.ai_takeover(uuid) is 'Run by the conversation__ai_takeover job when the ai_takeover_delay after an unanswered customer text has passed: unless a person has answered, the conversation ended or the AI is turned off for the tenant, the AI assistant takes the conversation (ai_active, ai_handoff_time) and its first turn is enqueued. Returns whether it took over.';

create function app_private.ai_turn_context(conversation_id uuid) returns jsonb
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select pg_catalog.jsonb_build_object(
    'conversation_id', c.id,
    'tenant_id', c.tenant_id,
    'active', c.status = 'active' and c.ai_active and not c.human_active,
    'business_name', t.business_name,
    'trade_type', t.trade_type,
    'greeting_template', coalesce(s.ai_greeting_template, 'Hello! How can we help?'),
    'reply_to_message_id', (
      select m.id from app_public.messages m
      where m.tenant_id = c.tenant_id and m.conversation_id = c.id and m.direction = 'inbound' and not m.ai_processed
      order by m.created_at desc, m.id desc limit 1),
    'turns', coalesce((
      select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('sender', x.sender, 'body', x.body) order by x.created_at, x.id)
      from (
        select m.sender, pg_catalog.left(m.body, 2000) as body, m.created_at, m.id
        from app_public.messages m
        where m.tenant_id = c.tenant_id and m.conversation_id = c.id and m.status <> 'canceled'
        order by m.created_at desc, m.id desc limit 30
      ) x), '[]'::jsonb),
    'known', pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
      'customerName', nullif(l.full_name, ''),
      'problem', l.problem_description,
      'jobType', l.job_type,
      'urgency', l.ai_analysis ->> 'urgency',
      'address', l.address,
      'preferredTime', l.ai_analysis ->> 'preferredTime')))
  from app_public.conversations c
  join app_public.tenants t on t.id = c.tenant_id
  left join app_public.business_settings s on s.tenant_id = c.tenant_id
  left join app_public.leads l on l.tenant_id = c.tenant_id and l.id = c.lead_id
  where c.id = ai_turn_context.conversation_id
$$;
comment on function app_private.ai_turn_context(uuid) is 'What the AI responder is given for a turn: business name, trade, greeting template, the last 30 messages (oldest first), what is known of the lead, whether the AI still has the conversation (active), and the newest customer message it has not answered (reply_to_message_id; null means nothing to answer).';

create function app_private.qualify_conversation_lead(conversation_id uuid) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_conv app_public.conversations;
  v_lead app_public.leads;
  v_user uuid;
  v_prefs app_public.user_preferences;
  v_phone text;
  v_sms app_public.messages;
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
  insert into app_public.notifications (tenant_id, user_id, kind, title, body, lead_id, conversation_id, sms_message_id)
  values (v_conv.tenant_id, v_user, 'lead_qualified',
    case when v_lead.urgency = 'emergency' then 'Emergency lead' else 'Qualified lead' end, v_text, v_lead.id, v_conv.id, v_sms.id)
  on conflict on constraint notifications_one_per_kind_and_lead do nothing;
  return true;
end;
$$;
comment on function app_private.qualify_conversation_lead(uuid) is $$Once the conversation has told what is wrong, where and how urgent (or that it is an emergency): the conversation outcome becomes qualified, the lead becomes qualified and is routed with route_lead, and the person who owns it is notified, in the app (notifications) and by text when their preferences say notification_sms and their profile has an E.164 phone. Happens once per conversation. Returns whether it happened now.$$;

create function app_private.record_ai_reply(conversation_id uuid, reply_to_message_id uuid, body text, intent text,
    confidence numeric, facts jsonb) returns app_public.messages
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_conv app_public.conversations;
  v_message app_public.messages;
  v_facts jsonb := coalesce(record_ai_reply.facts, '{}'::jsonb);
  v_urgency text;
begin
  if pg_catalog.jsonb_typeof(v_facts) <> 'object' then
    raise exception 'facts must be a JSON object' using errcode = '22023';
  end if;
  if record_ai_reply.intent is null or record_ai_reply.intent !~ '^[a-z_]{1,100}$' then
    raise exception 'intent must be a lower-case word such as ask_address' using errcode = '22023';
  end if;
  select c.* into v_conv from app_public.conversations c where c.id = record_ai_reply.conversation_id for update;
  if not found then
    raise exception 'No conversation %', record_ai_reply.conversation_id using errcode = 'P0002';
  end if;
  select m.* into v_message from app_public.messages m
  where m.tenant_id = v_conv.tenant_id and m.idempotency_key = 'ai_reply:' || record_ai_reply.reply_to_message_id;
  if found then
    return v_message;
  end if;
  -- A person answered, the customer opted out, or the conversation ended while the AI was thinking: stay quiet.
  if v_conv.status <> 'active' or not v_conv.ai_active or v_conv.human_active then
    return null;
  end if;

  v_urgency := case when v_facts ->> 'urgency' in ('low', 'normal', 'high', 'emergency') then v_facts ->> 'urgency' end;
  if v_conv.lead_id is not null then
    update app_public.leads l
    set ai_analysis = coalesce(l.ai_analysis, '{}'::jsonb) || pg_catalog.jsonb_strip_nulls(v_facts)
          || pg_catalog.jsonb_build_object('intent', record_ai_reply.intent, 'confidence', record_ai_reply.confidence, 'analyzed_at', now()),
        problem_description = coalesce(l.problem_description, nullif(pg_catalog.left(v_facts ->> 'problem', 2000), '')),
        job_type = coalesce(nullif(pg_catalog.left(v_facts ->> 'jobType', 100), ''), l.job_type),
        urgency = coalesce(v_urgency, l.urgency),
        address = coalesce(l.address, nullif(pg_catalog.left(v_facts ->> 'address', 500), '')),
        first_name = case when l.first_name is null and l.last_name is null
                          then nullif(pg_catalog.split_part(pg_catalog.btrim(v_facts ->> 'customerName'), ' ', 1), '') else l.first_name end,
        last_name = case when l.first_name is null and l.last_name is null
                         then nullif(pg_catalog.btrim(pg_catalog.substr(pg_catalog.btrim(v_facts ->> 'customerName'),
                           pg_catalog.length(pg_catalog.split_part(pg_catalog.btrim(v_facts ->> 'customerName'), ' ', 1)) + 1)), '') else l.last_name end
    where l.tenant_id = v_conv.tenant_id and l.id = v_conv.lead_id;
  end if;
  update app_public.messages m
  set ai_processed = true
  where m.tenant_id = v_conv.tenant_id and m.conversation_id = v_conv.id and m.direction = 'inbound' and not m.ai_processed
    and m.created_at <= (select r.created_at from app_public.messages r where r.id = record_ai_reply.reply_to_message_id);

  v_message := app_private.queue_message(v_conv.tenant_id, v_conv.customer_phone, v_conv.business_phone,
    pg_catalog.left(record_ai_reply.body, 1600), 'conversation', 'ai', v_conv.id, v_conv.lead_id,
    'ai_reply:' || record_ai_reply.reply_to_message_id);
  update app_public.messages m set intent = record_ai_reply.intent, confidence = round(record_ai_reply.confidence, 2)
  where m.id = v_message.id;
  v_message.intent := record_ai_reply.intent;
  v_message.confidence := round(record_ai_reply.confidence, 2);

  if record_ai_reply.intent in ('not_interested', 'wrong_number') then
    update app_public.conversations c
    set outcome = record_ai_reply.intent, status = 'closed', ai_active = false
    where c.id = v_conv.id;
  else
    perform app_private.qualify_conversation_lead(v_conv.id);
  end if;
  return v_message;
end;
$$;
comment on function app_private.record_ai_reply(uuid, uuid, text, text, numeric, jsonb) is $$Records one AI turn (conversation__ai_turn) in one transaction: the facts the responder extracted go into the lead (ai_analysis, and problem, job type, urgency, address and name where still empty), the customer messages up to reply_to_message_id are marked answered, the reply is queued with its intent and confidence (idempotent per answered message: a retried job sends nothing twice), and the lead is qualified and routed once it is complete (qualify_conversation_lead). A wrong number or a not interested closes the conversation. Returns null, writing nothing, when a person has answered or the conversation ended in the meantime. Errors: 22023 bad facts or intent; P0002 no such conversation.$$;

grant execute on function app_public.send_conversation_reply(uuid, text, text) to :DATABASE_VISITOR;
grant execute on function app_public.queue_sms(uuid, text, text, text) to :DATABASE_VISITOR;
grant execute on function app_public.request_phone_number(text, text) to :DATABASE_VISITOR;
