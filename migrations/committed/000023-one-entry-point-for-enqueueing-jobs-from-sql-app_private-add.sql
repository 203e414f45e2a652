--! Previous: sha1:abb5b486afc0092ace59bd4c9640407c7ed6efcd
--! Hash: sha1:5718e9ca7f1d9c869d0c8b9d6b88590449233f7f
--! Message: One entry point for enqueueing jobs from SQL: app_private.add_job gains job_key_mode, and the nine functions that called graphile_worker.add_job directly go through it (function files included from fixtures)

-- One entry point for enqueueing jobs from SQL: app_private.add_job gains job_key_mode (the AI
-- takeover keeps its run_at when a later text arrives), and the nine functions that called
-- graphile_worker.add_job directly go through it. No behaviour changes.
-- create or replace cannot add an argument: the old signature goes first (no object depends on a
-- PL/pgSQL function's signature, so nothing else is dropped).
drop function if exists app_private.add_job(text, json, text, timestamptz, integer, text, integer);
--! Included platform/add_job.sql
create or replace function app_private.add_job(
  identifier text,
  payload json default '{}',
  queue_name text default null,
  run_at timestamptz default null,
  max_attempts integer default null,
  job_key text default null,
  priority integer default null,
  job_key_mode text default null
) returns bigint
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_job_id bigint;
begin
  select j.id into v_job_id
  from graphile_worker.add_job(
    identifier => add_job.identifier,
    payload => coalesce(add_job.payload, '{}'::json),
    queue_name => add_job.queue_name,
    run_at => add_job.run_at,
    max_attempts => add_job.max_attempts,
    job_key => add_job.job_key,
    priority => add_job.priority,
    job_key_mode => coalesce(add_job.job_key_mode, 'replace')
  ) j;
  return v_job_id;
end;
$$;

comment on function app_private.add_job(text, json, text, timestamptz, integer, text, integer, text) is 'The one way our SQL enqueues a graphile-worker job: in the current transaction, so the job only runs if the change commits. Arguments as graphile_worker.add_job: a job_key replaces the pending job with that key (job_key_mode replace, the default), or keeps its run_at (preserve_run_at). Returns the job id.';
--! EndIncluded platform/add_job.sql
--! Included messaging/ai_takeover.sql
create or replace function app_private.ai_takeover(conversation_id uuid) returns boolean
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
  perform app_private.add_job('conversation__ai_turn', pg_catalog.json_build_object('conversation_id', v_conv.id),
    job_key => 'ai_turn:' || v_conv.id);
  return true;
end;
$$;

comment on function app_private.ai_takeover(uuid) is 'Run by the conversation__ai_takeover job when the ai_takeover_delay after an unanswered customer text has passed: unless a person has answered, the conversation ended or the AI is turned off for the tenant, the AI assistant takes the conversation (ai_active, ai_handoff_time) and its first turn is enqueued. Returns whether it took over.';
--! EndIncluded messaging/ai_takeover.sql
--! Included messaging/record_call_status.sql
create or replace function app_private.record_call_status(call_sid text, from_phone text, to_phone text, call_status text,
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
    perform app_private.add_job('call__process_missed', pg_catalog.json_build_object('call_id', v_call.id),
      job_key => 'call_missed:' || v_call.id);
  end if;
end;
$$;

comment on function app_private.record_call_status(text, text, text, text, integer, text, integer) is $$The call-status and dial-result webhooks: CallStatus only moves forward (a late ringing never overwrites completed), the first reported outcome of the forwarded leg is kept, and the call is judged once: missed when the forwarded leg was not answered (busy, no-answer, failed, canceled), was answered for less than missed_call_threshold_seconds, or when the call ended without a forwarded leg. A missed call enqueues call__process_missed. A status for an unknown CallSid records the call first. Errors: 22023 malformed values; P0002 a number of no tenant.$$;
--! EndIncluded messaging/record_call_status.sql
--! Included messaging/record_inbound_message.sql
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
    perform app_private.add_job('conversation__ai_turn', pg_catalog.json_build_object('conversation_id', v_conv.id),
      job_key => 'ai_turn:' || v_conv.id);
  elsif not v_conv.human_active then
    select s.* into v_settings from app_public.business_settings s where s.tenant_id = v_owner.tenant_id;
    if coalesce(v_settings.ai_enabled, true) then
      v_user := app_private.takeover_user_id(v_owner.tenant_id, v_lead.lead_id);
      select p.ai_takeover_delay into v_delay from app_public.user_preferences p where p.user_id = v_user;
      perform app_private.add_job('conversation__ai_takeover', pg_catalog.json_build_object('conversation_id', v_conv.id),
        run_at => now() + pg_catalog.make_interval(secs => coalesce(v_delay, 60)),
        job_key => 'ai_takeover:' || v_conv.id, job_key_mode => 'preserve_run_at');
    end if;
  end if;
end;
$$;

comment on function app_private.record_inbound_message(text, text, text, text, integer) is $$The incoming-text webhook, once per MessageSid (repeated or concurrent deliveries wait for the first and change nothing; duplicate is then true). STOP and the other opt-out words: record_opt_out. HELP or INFO: the help text of the tenant is queued. START, UNSTOP or YES from a number that opted out: record_opt_in. Any other text: the lead (source inbound_sms) and the active conversation are found or created, the message is stored, and the AI either answers at once (it has the conversation) or is scheduled to take over after the ai_takeover_delay of the person who owns the lead (unless a person already answers, or ai_enabled is off). Errors: 22023 a malformed MessageSid, number, or a body over 100000 characters; P0002 a number of no tenant.$$;
--! EndIncluded messaging/record_inbound_message.sql
--! Included messaging/sweep_outbox.sql
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
    where m.status = 'queued' and m.scheduled_for <= app_hidden.clock_now(m.tenant_id) - sweep_outbox.grace
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
    perform app_private.add_job('sms__reconcile', pg_catalog.json_build_object('message_id', v_message.id),
      job_key => 'sms_reconcile:' || v_message.id, max_attempts => 10);
    to_reconcile := to_reconcile + 1;
  end loop;
end;
$$;

comment on function app_private.sweep_outbox(interval) is $$Finds outbox rows a stopped worker left behind (run every minute by the sms__sweep cron task, and at worker start): queued messages overdue by more than grace get their sms__send job again (a duplicate job is harmless: only one claim succeeds); messages in sending for more than grace get an sms__reconcile job, which asks the provider before anything is sent again. The grace must exceed the provider timeout, so that a send still under way is not taken for a lost one.$$;
--! EndIncluded messaging/sweep_outbox.sql
--! Included messaging/enqueue_email_send.sql
create or replace function app_private.enqueue_email_send(email_id uuid, run_at timestamptz default null) returns void
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.add_job('email__send', pg_catalog.json_build_object('email_id', enqueue_email_send.email_id),
    run_at => case when enqueue_email_send.run_at is null then null
      else app_hidden.clock_to_real((select e.tenant_id from app_public.email_messages e where e.id = enqueue_email_send.email_id), enqueue_email_send.run_at) end,
    job_key => 'email_send:' || enqueue_email_send.email_id, max_attempts => 10);
end;
$$;

comment on function app_private.enqueue_email_send(uuid, timestamptz) is 'Enqueues (or moves) the email__send job of one outbox email, keyed email_send:<id>; run_at is a time on the clock of the tenant (clock_now), null means now. A second job for an email is harmless: only one claim succeeds.';
--! EndIncluded messaging/enqueue_email_send.sql
--! Included messaging/sweep_email_outbox.sql
create or replace function app_private.sweep_email_outbox(grace interval default interval '10 minutes', out requeued integer, out to_settle integer)
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
    perform app_private.add_job('email__reconcile', pg_catalog.json_build_object('email_id', v_email.id),
      job_key => 'email_reconcile:' || v_email.id, max_attempts => 10);
    to_settle := to_settle + 1;
  end loop;
end;
$$;

comment on function app_private.sweep_email_outbox(interval) is $$Finds emails a stopped worker left behind (run every minute by the email__sweep cron task): queued emails overdue by more than grace get their email__send job again (only one claim succeeds); emails in sending for more than grace get an email__reconcile job, which asks the provider before anything is sent again. The grace must exceed the SMTP timeout.$$;
--! EndIncluded messaging/sweep_email_outbox.sql
--! Included messaging/enqueue_sms_send.sql
create or replace function app_private.enqueue_sms_send(message_id uuid, run_at timestamptz default null) returns void
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.add_job('sms__send', pg_catalog.json_build_object('message_id', enqueue_sms_send.message_id),
    run_at => case when enqueue_sms_send.run_at is null then null
      else app_hidden.clock_to_real((select m.tenant_id from app_public.messages m where m.id = enqueue_sms_send.message_id), enqueue_sms_send.run_at) end, job_key => 'sms_send:' || enqueue_sms_send.message_id, max_attempts => 10);
end;
$$;

comment on function app_private.enqueue_sms_send(uuid, timestamptz) is 'Enqueues (or moves) the sms__send job of one outbox message, keyed sms_send:<id> so a message has one pending job; run_at is a time on the clock of the tenant (clock_now), null means now. A second job for a message is harmless: only one claim succeeds.';
--! EndIncluded messaging/enqueue_sms_send.sql
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
  return v_count;
end;
$$;

comment on function app_private.wake_due_jobs(uuid) is 'After the clock of a tenant moved forward: everything of the tenant now due by its clock (queued emails and texts, nurture steps) gets its job at once instead of at the real time it was placed at. Returns how many jobs were moved.';
--! EndIncluded messaging/wake_due_jobs.sql
--! Included nurture/schedule_nurture_step.sql
create or replace function app_private.schedule_nurture_step(enrollment_id uuid) returns void
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_enrollment app_public.lead_sequence_enrollments;
begin
  select e.* into v_enrollment from app_public.lead_sequence_enrollments e where e.id = schedule_nurture_step.enrollment_id;
  if v_enrollment.status is distinct from 'active' then
    return;
  end if;
  perform app_private.add_job('nurture__run_step',
    pg_catalog.json_build_object('enrollment_id', v_enrollment.id, 'step', v_enrollment.next_step_number),
    run_at => app_hidden.clock_to_real(v_enrollment.tenant_id, v_enrollment.next_step_at),
    job_key => 'nurture:' || v_enrollment.id || ':' || v_enrollment.next_step_number, max_attempts => 10);
end;
$$;

comment on function app_private.schedule_nurture_step(uuid) is 'Enqueues (or moves) the nurture__run_step job of the next step of an active enrollment at next_step_at (on the clock of the tenant), keyed nurture:<enrollment>:<step> so that rescheduling replaces rather than duplicates.';
--! EndIncluded nurture/schedule_nurture_step.sql
