--! Previous: sha1:7e5b65a60a32ef88e88c7bb4e5bf485fcefe2035
--! Hash: sha1:b3af469f992c224966f05a105acac2afb7d4eac4
--! Message: outbox review: is_on_dnc_list reused, one enqueue_sms_send, one recipient_send_window, one require_e164

--------------------------------------------------------------------------------
-- Review of 000009: one place for each rule the outbox functions shared.
--   * the do-not-contact check is app_public.is_on_dnc_list (the function the project already had),
--     no longer three copies of its query;
--   * enqueue_sms_send is the one way to (re)enqueue a message for sending (five copies before);
--   * recipient_send_window resolves the recipient of a marketing text (lead region and time zone)
--     for the guard and for the claim alike;
--   * require_e164 gives the webhooks one message for a malformed number.
--------------------------------------------------------------------------------

create or replace function app_hidden.require_e164(value text, field text) returns text
  language plpgsql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if value is null or value !~ '^\+[1-9][0-9]{6,14}$' then
    raise exception '% must be a phone number in E.164 form (e.g. +12125551234), got %', field,
      coalesce(pg_catalog.quote_literal(pg_catalog.left(value, 40)), 'nothing')
      using errcode = '22023';
  end if;
  return value;
end;
$$;
comment on function app_hidden.require_e164(text, text) is 'Returns the value when it is a phone number in E.164 form, else raises 22023 "<field> must be a phone number in E.164 form (e.g. +12125551234), got <value>".';

create or replace function app_private.enqueue_sms_send(message_id uuid, run_at timestamptz default null) returns void
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform graphile_worker.add_job('sms__send', pg_catalog.json_build_object('message_id', enqueue_sms_send.message_id),
    run_at => enqueue_sms_send.run_at, job_key => 'sms_send:' || enqueue_sms_send.message_id, max_attempts => 10);
end;
$$;
comment on function app_private.enqueue_sms_send(uuid, timestamptz) is 'Enqueues (or moves) the sms__send job of one outbox message, keyed sms_send:<id> so a message has one pending job; run_at null means now. A second job for a message is harmless: only one claim succeeds.';

create or replace function app_hidden.recipient_send_window(tenant_id uuid, lead_id uuid, phone text, at timestamptz)
  returns app_public.sms_window
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select app_public.sms_send_window(recipient_send_window.phone, l.region, l.timezone, recipient_send_window.at)
  from (select 1) one
  left join lateral (
    select l.region, l.timezone from app_public.leads l
    where l.tenant_id = recipient_send_window.tenant_id
      and (l.id = recipient_send_window.lead_id
           or (recipient_send_window.lead_id is null and l.phone = recipient_send_window.phone and l.deleted_at is null))
    limit 1
  ) l on true
$$;
comment on function app_hidden.recipient_send_window(uuid, uuid, text, timestamptz) is 'sms_send_window for the recipient of a text: with the state and time zone of its lead (the given lead, else the live lead with that phone in the tenant), else from the number alone.';

create or replace function app_private.tg_messages__guard_outbound() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_window app_public.sms_window;
  v_at timestamptz := NEW.scheduled_for;
  v_cap_hit timestamptz;
begin
  if NEW.purpose not in ('opt_out_confirmation', 'help')
     and app_public.is_on_dnc_list(NEW.to_phone, NEW.tenant_id) then
    raise exception 'Not sent: % is on the do-not-contact list of this business (it opted out or was blocked), so nothing may be texted to it', NEW.to_phone
      using errcode = 'SB001';
  end if;
  if NEW.purpose not in ('marketing', 'nurture') then
    return NEW;
  end if;

  -- One recipient at a time, so that concurrent queuing cannot pass a daily cap together.
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('sms-cap:' || NEW.tenant_id || ':' || NEW.to_phone, 0));

  for step in 1..60 loop
    v_window := app_hidden.recipient_send_window(NEW.tenant_id, NEW.lead_id, NEW.to_phone, v_at);
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

create or replace function app_private.tg_messages__enqueue_send() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.enqueue_sms_send(NEW.id, NEW.scheduled_for);
  return null;
end;
$$;
comment on function app_private.tg_messages__enqueue_send() is 'Trigger (_900_enqueue_send, after insert of queued outbound messages): enqueues the sms__send job at scheduled_for, keyed by the message (job key sms_send:<id>).';

create or replace function app_private.claim_outbound_message(message_id uuid) returns app_public.messages
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_message app_public.messages;
  v_window app_public.sms_window;
begin
  select m.* into v_message from app_public.messages m
  where m.id = claim_outbound_message.message_id and m.direction = 'outbound' for update;
  if not found or v_message.status <> 'queued' then
    return null;
  end if;
  if v_message.scheduled_for > now() + interval '1 second' then
    perform app_private.enqueue_sms_send(v_message.id, v_message.scheduled_for);
    return null;
  end if;
  -- Consent is checked again at the last moment: the customer may have opted out since queuing.
  if v_message.purpose not in ('opt_out_confirmation', 'help')
     and app_public.is_on_dnc_list(v_message.to_phone, v_message.tenant_id) then
    update app_public.messages m
    set status = 'canceled', failed_at = now(), error_message = 'Canceled: the number is on the do-not-contact list (checked again before sending)'
    where m.id = v_message.id;
    return null;
  end if;
  if v_message.purpose in ('marketing', 'nurture') then
    v_window := app_hidden.recipient_send_window(v_message.tenant_id, v_message.lead_id, v_message.to_phone, now());
    if not v_window.allowed then
      update app_public.messages m set scheduled_for = coalesce(v_window.next_allowed_at, now() + interval '1 hour') where m.id = v_message.id
      returning m.* into v_message;
      perform app_private.enqueue_sms_send(v_message.id, v_message.scheduled_for);
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

create or replace function app_private.release_message_for_retry(message_id uuid, error_message text, delay_seconds integer)
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
  perform app_private.enqueue_sms_send(release_message_for_retry.message_id, v_at);
  return true;
end;
$$;
comment on function app_private.release_message_for_retry(uuid, text, integer) is 'Step 2 of sending when the provider certainly did not take the message (e.g. HTTP 429, too many requests): back to queued, tried again after delay_seconds.';

create or replace function app_private.reconcile_message(message_id uuid, message_sid text, provider_status text,
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
    perform app_private.enqueue_sms_send(v_message.id);
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

create or replace function app_private.sweep_outbox(grace interval default interval '10 minutes', out requeued integer, out to_reconcile integer)
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
    perform app_private.enqueue_sms_send(v_message.id);
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

create or replace function app_private.process_missed_call(call_id uuid) returns boolean
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
     and not app_public.is_on_dnc_list(v_call.customer_phone, v_call.tenant_id) then
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

create or replace function app_private.record_inbound_call(call_sid text, from_phone text, to_phone text, call_status text,
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
  perform app_hidden.require_e164(record_inbound_call.from_phone, 'From');
  perform app_hidden.require_e164(record_inbound_call.to_phone, 'To');
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

create or replace function app_private.record_inbound_message(message_sid text, from_phone text, to_phone text, body text,
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
  perform app_hidden.require_e164(record_inbound_message.from_phone, 'From');
  perform app_hidden.require_e164(record_inbound_message.to_phone, 'To');
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

comment on table app_public.sms_consent_events is $$@behavior -insert -update -delete
Every change of consent to receive texts, with its source and time: opt_out (STOP and the other opt-out words; the number joins the do-not-contact list) and opt_in (START, UNSTOP or YES; an opt-out entry leaves the list). Written only by record_opt_out and record_opt_in; requests can read it, never change it.$$;
