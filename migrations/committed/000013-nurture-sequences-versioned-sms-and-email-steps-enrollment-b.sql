--! Previous: sha1:2d28212202b2e8b2b378e3fec5b2db7ae05a04e0
--! Hash: sha1:4fbc9032399f5bae88aa2ff5ce1758403172897c
--! Message: Nurture sequences: versioned SMS and email steps, enrollment by hand, segment and status, steps run once by jobs on the tenant clock, stop rules, statistics and timeline; the SMS outbox reads the tenant clock; sms_send_window no longer reads pg_timezone_names

-- Migration 000013: nurture sequences. Versioned multi-step SMS and email sequences, enrollment by
-- hand, by segment and by status, steps run by graphile-worker jobs scheduled from SQL and sent
-- exactly once through the outboxes, stopped by replies, opt-outs, DNC, deletion, human contact and
-- final statuses, with statistics and timeline events. The SMS outbox now reads the tenant clock too.

drop table if exists app_public.nurture_step_runs, app_public.lead_sequence_enrollments,
  app_public.nurture_sequence_versions, app_public.nurture_sequences cascade;
drop type if exists app_public.nurture_sequence_stats, app_public.nurture_step_stats cascade;
alter table app_public.messages drop column if exists nurture_enrollment_id cascade, drop column if exists nurture_step cascade;
alter table app_public.email_messages drop column if exists nurture_enrollment_id cascade, drop column if exists nurture_step cascade;
alter table app_public.business_settings drop column if exists nurture_stop_on_human_contact;
do $do$
declare
  f record;
begin
  for f in
    select p.oid::regprocedure as sig
    from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
    where (n.nspname, p.proname) in (('app_hidden', 'lead_matches_filter'),
      ('app_hidden', 'is_trusted_caller'),
      ('app_private', 'sms_marketing_send_time'),
      ('app_hidden', 'nurture_template_variables'),
      ('app_hidden', 'nurture_template_problem'),
      ('app_hidden', 'nurture_steps_problem'),
      ('app_hidden', 'sending_window_problem'),
      ('app_hidden', 'next_in_sending_window'),
      ('app_hidden', 'nurture_step_due'),
      ('app_private', 'render_nurture_template'),
      ('app_private', 'nurture_send_time'),
      ('app_private', 'schedule_nurture_step'),
      ('app_private', 'plan_next_nurture_step'),
      ('app_private', 'enroll_lead'),
      ('app_private', 'run_nurture_step'),
      ('app_private', 'stop_enrollment'),
      ('app_private', 'nurture_lead_opted_out'),
      ('app_private', 'stop_lead_enrollments'),
      ('app_private', 'sweep_nurture'),
      ('app_private', 'tg_nurture_sequences__require_manager'),
      ('app_private', 'tg_nurture_sequences__version'),
      ('app_private', 'tg_nurture_sequences__status_changed'),
      ('app_private', 'tg_leads__nurture'),
      ('app_private', 'tg_messages__nurture_stop'),
      ('app_private', 'tg_dnc_list__nurture_stop'),
      ('app_private', 'tg_email_suppressions__nurture_stop'),
      ('app_public', 'enroll_lead_in_sequence'),
      ('app_public', 'enroll_segment_in_sequence'),
      ('app_public', 'unenroll_lead_from_sequence'),
      ('app_public', 'nurture_sequences_stats'),
      ('app_public', 'nurture_sequences_step_stats'),
      ('app_public', 'preview_nurture_step'))
  loop
    execute pg_catalog.format('drop function %s cascade', f.sig);
  end loop;
end;
$do$;

--------------------------------------------------------------------------------
-- The SMS outbox reads the clock of the tenant (migration 000012), like the email outbox
--------------------------------------------------------------------------------

create or replace function app_private.queue_message(tenant_id uuid, to_phone text, from_phone text, body text, purpose text,
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
    queue_message.idempotency_key, 'queued', coalesce(queue_message.scheduled_for, app_hidden.clock_now(queue_message.tenant_id)))
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

create or replace function app_private.enqueue_sms_send(message_id uuid, run_at timestamptz default null) returns void
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform graphile_worker.add_job('sms__send', pg_catalog.json_build_object('message_id', enqueue_sms_send.message_id),
    run_at => case when enqueue_sms_send.run_at is null then null
      else app_hidden.clock_to_real((select m.tenant_id from app_public.messages m where m.id = enqueue_sms_send.message_id), enqueue_sms_send.run_at) end, job_key => 'sms_send:' || enqueue_sms_send.message_id, max_attempts => 10);
end;
$$;
comment on function app_private.enqueue_sms_send(uuid, timestamptz) is 'Enqueues (or moves) the sms__send job of one outbox message, keyed sms_send:<id> so a message has one pending job; run_at is a time on the clock of the tenant (clock_now), null means now. A second job for a message is harmless: only one claim succeeds.';

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
  if v_message.scheduled_for > app_hidden.clock_now(v_message.tenant_id) + interval '1 second' then
    perform app_private.enqueue_sms_send(v_message.id, v_message.scheduled_for);
    return null;
  end if;
  -- A nurture text goes only while its lead may be nurtured: not after its enrollment stopped, not after
  -- an opt-out on either channel (a row a dead worker left in sending may come back here after that).
  if v_message.nurture_enrollment_id is not null
     and (exists (select 1 from app_public.lead_sequence_enrollments e where e.id = v_message.nurture_enrollment_id and e.status = 'stopped')
          or app_private.nurture_lead_opted_out(v_message.tenant_id, v_message.lead_id) is not null) then
    update app_public.messages m
    set status = 'canceled', failed_at = now(), error_message = 'Canceled: nurture stopped for this lead (checked again before sending)'
    where m.id = v_message.id;
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
    v_window := app_hidden.recipient_send_window(v_message.tenant_id, v_message.lead_id, v_message.to_phone, app_hidden.clock_now(v_message.tenant_id));
    if not v_window.allowed then
      update app_public.messages m set scheduled_for = coalesce(v_window.next_allowed_at, app_hidden.clock_now(v_message.tenant_id) + interval '1 hour') where m.id = v_message.id
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
comment on function app_private.claim_outbound_message(uuid) is $$Step 1 of sending (sms__send), committed before the provider is called: a queued message due by the clock of its tenant becomes sending and is returned. Nothing (null) when it is not queued any more, not due yet (its job is moved), its number has joined the do-not-contact list since, or it is a nurture text whose enrollment stopped or whose lead opted out on either channel (canceled), or a marketing or nurture text is outside the sending hours by now (moved). A message left in sending by a crash is not sent again blindly: sweep_outbox hands it to reconciliation, which asks the provider first.$$;

create or replace function app_private.release_message_for_retry(message_id uuid, error_message text, delay_seconds integer)
  returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_at timestamptz := app_hidden.clock_now((select m.tenant_id from app_public.messages m where m.id = release_message_for_retry.message_id))
    + pg_catalog.make_interval(secs => greatest(coalesce(release_message_for_retry.delay_seconds, 30), 1));
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
    set status = 'queued', scheduled_for = app_hidden.clock_now(v_message.tenant_id),
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
    perform graphile_worker.add_job('sms__reconcile', pg_catalog.json_build_object('message_id', v_message.id),
      job_key => 'sms_reconcile:' || v_message.id, max_attempts => 10);
    to_reconcile := to_reconcile + 1;
  end loop;
end;
$$;
comment on function app_private.sweep_outbox(interval) is $$Finds outbox rows a stopped worker left behind (run every minute by the sms__sweep cron task, and at worker start): queued messages overdue by more than grace get their sms__send job again (a duplicate job is harmless: only one claim succeeds); messages in sending for more than grace get an sms__reconcile job, which asks the provider before anything is sent again. The grace must exceed the provider timeout, so that a send still under way is not taken for a lost one.$$;

--------------------------------------------------------------------------------
-- sms_send_window checks the time zone by using it (it read pg_timezone_names on every call)
--------------------------------------------------------------------------------

create or replace function app_public.sms_send_window(phone text, region text default null, timezone text default null,
    at timestamptz default now()) returns app_public.sms_window
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_area app_public.phone_area_codes := app_public.phone_region(sms_send_window.phone);
  v_regions text[];
  v_country text;
  v_given app_public.region_timezones;
  v_jurisdictions text[];
  v_tz text;
  v_local timestamp;
  v_day date;
  v_from time;
  v_until time;
  v_result app_public.sms_window;
begin
  if sms_send_window.at is null then
    raise exception 'The moment to check is required' using errcode = '22023';
  end if;
  -- A number keeps its area code when its owner moves: the rules of both the state of the area code and
  -- the known state of the recipient apply, and the earlier end and later start win.
  if nullif(pg_catalog.btrim(sms_send_window.region), '') is not null then
    -- Same spellings as timezone_for_region: postal code, ISO 3166-2 code or English name.
    select r.* into v_given from app_public.region_timezones r
     where pg_catalog.upper(pg_catalog.btrim(sms_send_window.region)) in (r.region, r.country || '-' || r.region)
        or pg_catalog.lower(pg_catalog.btrim(sms_send_window.region)) = pg_catalog.lower(r.name)
     order by r.country = coalesce(v_area.country, 'US') desc
     limit 1;
    if v_given.region is null then
      raise exception 'Unknown region ''%'': give a US state or Canadian province as a postal code (FL), ISO code (US-FL) or name (Florida)', sms_send_window.region
        using errcode = '22023';
    end if;
  end if;
  v_regions := array_remove(array[v_area.country || '-' || v_area.region, v_given.country || '-' || v_given.region], null);
  v_tz := coalesce(nullif(pg_catalog.btrim(sms_send_window.timezone), ''), v_area.timezone, v_given.timezone);
  -- pg_timezone_names reads the whole time zone database (tens of milliseconds on every call, the bulk of
  -- the cost of each marketing or nurture text). The zones of the reference tables are known to be valid
  -- (the migrations checked them); any other name is checked by using it, in a subtransaction.
  if v_tz is null then
    raise exception 'Cannot tell the local time of % (unknown area code, no known time zone or state): give a timezone', coalesce(sms_send_window.phone, 'this recipient')
      using errcode = '22023';
  end if;
  if not exists (select 1 from app_public.phone_area_codes a where a.timezone = v_tz)
     and not exists (select 1 from app_public.region_timezones r where r.timezone = v_tz) then
    begin
      v_local := sms_send_window.at at time zone v_tz;
    exception when invalid_parameter_value then
      raise exception 'Cannot tell the local time of % (unknown area code, no known time zone or state): give a timezone', coalesce(sms_send_window.phone, 'this recipient')
        using errcode = '22023';
    end;
  end if;
  v_local := sms_send_window.at at time zone v_tz;
  -- National rules of every country involved (US when nothing says otherwise), plus the state rules.
  v_country := coalesce(v_area.country, v_given.country, 'US');
  select pg_catalog.array_agg(distinct w.jurisdiction order by w.jurisdiction) into v_jurisdictions
    from app_public.sms_send_windows w
   where w.jurisdiction = any (v_regions)
      or w.jurisdiction = any (array_remove(array[v_country, v_area.country, v_given.country], null));
  v_result.timezone := v_tz;
  v_result.jurisdictions := coalesce(v_jurisdictions, '{}');
  select pg_catalog.min(c.max_per_24h) into v_result.max_per_24h
    from app_public.sms_message_caps c where c.jurisdiction = any (v_result.jurisdictions);

  -- Today and the next 7 local days: the first window (intersection of all rules) not yet over.
  for i in 0..7 loop
    v_day := v_local::date + i;
    select pg_catalog.max(w.allowed_from), pg_catalog.min(w.allowed_until) into v_from, v_until
      from app_public.sms_send_windows w
     where w.jurisdiction = any (v_result.jurisdictions) and w.isodow = extract(isodow from v_day)::int;
    continue when v_from is null or v_from >= v_until;
    if i = 0 and v_local::time >= v_from and v_local::time < v_until then
      v_result.allowed := true;
      v_result.next_allowed_at := sms_send_window.at;
      v_result.reason := '';
      return v_result;
    end if;
    if i > 0 or v_local::time < v_from then
      v_result.allowed := false;
      v_result.next_allowed_at := (v_day + v_from) at time zone v_tz;
      v_result.reason := pg_catalog.format('Outside the allowed hours (%s): it is %s there (%s); next allowed %s local time',
        pg_catalog.array_to_string(v_result.jurisdictions, ', '), pg_catalog.to_char(v_local, 'Dy HH24:MI'), v_tz,
        pg_catalog.to_char(v_day + v_from, 'Dy HH24:MI'));
      return v_result;
    end if;
  end loop;
  v_result.allowed := false;
  v_result.reason := 'No allowed hours in the coming week under ' || pg_catalog.array_to_string(v_result.jurisdictions, ', ');
  return v_result;
end;
$$;
comment on function app_public.sms_send_window(text, text, text, timestamptz) is $$Whether a marketing or nurture text may reach this recipient at the given moment (default now), and if not, the next moment it may. The rules are the national window (US, or CA for Canadian area codes) plus the stricter rules of the state of the area code of the number and of the known state of the recipient (region), all of which must hold; the local time is that of the given timezone, else that of the area code, else that of the state. Replies inside a conversation the customer started are not marketing and are not held to these hours. Errors: 22023 for an unknown region (give a postal code, ISO code or name), or when the local time cannot be told (no known area code, timezone or state) or the moment is null.$$;

create function app_private.sms_marketing_send_time(tenant_id uuid, lead_id uuid, to_phone text, at timestamptz)
  returns timestamptz
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_window app_public.sms_window;
  v_at timestamptz := sms_marketing_send_time.at;
  v_cap_hit timestamptz;
begin
  for step in 1..60 loop
    v_window := app_hidden.recipient_send_window(sms_marketing_send_time.tenant_id, sms_marketing_send_time.lead_id,
      sms_marketing_send_time.to_phone, v_at);
    if not v_window.allowed then
      if v_window.next_allowed_at is null then
        raise exception 'Not queued: no legal sending time for % within a week (%)', sms_marketing_send_time.to_phone, v_window.reason
          using errcode = '22023';
      end if;
      v_at := v_window.next_allowed_at;
      continue;
    end if;
    if v_window.max_per_24h is null then
      return v_at;
    end if;
    -- The cap holds for every 24-hour period: look at each period that would contain v_at.
    select min(s.start_at + interval '24 hours') into v_cap_hit
    from (
      select m.scheduled_for as start_at
      from app_public.messages m
      where m.tenant_id = sms_marketing_send_time.tenant_id and m.to_phone = sms_marketing_send_time.to_phone
        and m.direction = 'outbound' and m.purpose in ('marketing', 'nurture') and m.status <> 'canceled'
        and m.scheduled_for > v_at - interval '24 hours' and m.scheduled_for <= v_at
      union all
      select v_at
    ) s
    where (
      select count(*) from app_public.messages m
      where m.tenant_id = sms_marketing_send_time.tenant_id and m.to_phone = sms_marketing_send_time.to_phone
        and m.direction = 'outbound' and m.purpose in ('marketing', 'nurture') and m.status <> 'canceled'
        and m.scheduled_for >= s.start_at and m.scheduled_for < s.start_at + interval '24 hours'
    ) >= v_window.max_per_24h;
    if v_cap_hit is null then
      return v_at;
    end if;
    v_at := greatest(v_cap_hit, v_at + interval '1 second');
  end loop;
  raise exception 'Not queued: the daily cap for % leaves no sending time soon enough', sms_marketing_send_time.to_phone using errcode = '22023';
end;
$$;
comment on function app_private.sms_marketing_send_time(uuid, uuid, text, timestamptz) is $$The first moment at or after at when a marketing or nurture text may reach the number: inside the legal sending hours of the recipient (sms_send_window: federal and state rules, in the recipient’s time zone) and allowed by the strictest per-state cap of messages per 24 hours, counting what is already queued or sent. Errors: 22023 when no such moment comes soon enough.$$;

create or replace function app_private.tg_messages__guard_outbound() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
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
  NEW.scheduled_for := app_private.sms_marketing_send_time(NEW.tenant_id, NEW.lead_id, NEW.to_phone, NEW.scheduled_for);
  return NEW;
end;
$$;
comment on function app_private.tg_messages__guard_outbound() is $$Trigger (_200_guard_outbound, before insert of outbound messages). THE RULE of is_on_dnc_list, enforced where every text is written: a number on the do-not-contact list gets nothing (SQLSTATE SB001), except the one opt-out confirmation and HELP replies, which the carriers require. Marketing and nurture texts are moved (scheduled_for) to sms_marketing_send_time: legal sending hours of the recipient and the per-state daily cap; texts in a conversation the customer started are not marketing and go at once. Concurrent queuing to one recipient is serialized by an advisory lock.$$;

--------------------------------------------------------------------------------
-- Does one lead match a filter of the find_leads language? (routing rules, nurture step conditions)
--------------------------------------------------------------------------------

create function app_hidden.lead_matches_filter(tenant_id uuid, lead_id uuid, filter jsonb) returns boolean
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  f app_hidden.lead_filter := app_hidden.parse_lead_filter(lead_matches_filter.filter);
  v_match boolean;
begin
  execute pg_catalog.format('select exists (select 1 from app_public.leads l where %s and l.id = $17)', app_hidden.lead_filter_where(f))
    into v_match
    using lead_matches_filter.tenant_id, f.status, f.status_not, f.tags_any, f.tags_all, f.score_min, f.score_max, f.source,
      pg_catalog.now() - pg_catalog.make_interval(days => f.created_within_days),
      case when f.created_from is not null then app_hidden.tenant_day_start(lead_matches_filter.tenant_id, f.created_from) end,
      case when f.created_to is not null then app_hidden.tenant_day_start(lead_matches_filter.tenant_id, f.created_to + 1) end,
      f.city, f.region, f.owner_user_id,
      '%' || app_hidden.like_escape(f.text) || '%',
      '%' || app_hidden.phone_search_digits(f.text) || '%',
      lead_matches_filter.lead_id;
  return v_match;
end;
$$;
comment on function app_hidden.lead_matches_filter(uuid, uuid, jsonb) is 'True when the lead matches the filter (the find_leads language, compiled with bound parameters). Security invoker: row-level security applies to the caller. Errors: 22023 a malformed filter, naming the field.';

create or replace function app_private.matching_routing_rule(tenant_id uuid, lead_id uuid) returns app_public.routing_rules
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  r app_public.routing_rules;
  v_match boolean;
begin
  for r in
    select * from app_public.routing_rules rr
     where rr.tenant_id = matching_routing_rule.tenant_id and rr.is_active
     order by rr.priority, rr.created_at, rr.id
  loop
    if r.conditions = '{}'::jsonb then
      return r;
    end if;
    begin
      v_match := app_hidden.lead_matches_filter(matching_routing_rule.tenant_id, matching_routing_rule.lead_id, r.conditions);
    exception when invalid_parameter_value then
      -- A malformed rule (saved before validation existed) never matches; it is reported, not fatal.
      raise warning 'Routing rule % (%) has invalid conditions and is skipped: %', r.name, r.id, sqlerrm;
      continue;
    end;
    if v_match then
      return r;
    end if;
  end loop;
  return null;
end;
$$;

--------------------------------------------------------------------------------
-- Templates, steps and sending windows: validated when a sequence is saved
--------------------------------------------------------------------------------

create function app_hidden.nurture_template_variables() returns text[]
  language sql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
  select array['lead.first_name', 'lead.last_name', 'lead.full_name', 'lead.email', 'lead.phone', 'lead.address',
    'lead.city', 'lead.region', 'lead.postal_code', 'lead.job_type', 'lead.event_type', 'lead.event_date',
    'lead.service_line', 'lead.source', 'lead.status',
    'tenant.business_name', 'tenant.trade_type', 'tenant.phone',
    'owner.first_name', 'owner.last_name', 'owner.full_name']
$$;
comment on function app_hidden.nurture_template_variables() is 'The variables a nurture template may use, as {{lead.first_name}} or with a fallback for an empty value, {{lead.first_name | default: "there"}}. tenant.phone is the first active texting number of the business; owner is the member who owns the lead.';

create function app_hidden.nurture_template_problem(template text) returns text
  language plpgsql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_pattern constant text := '\{\{\s*([a-z_]+\.[a-z_]+)\s*(\|\s*default:\s*"[^"{}]*"\s*)?\}\}';
  v_match text[];
  v_rest text;
begin
  for v_match in select pg_catalog.regexp_matches(template, v_pattern, 'g') loop
    if not v_match[1] = any (app_hidden.nurture_template_variables()) then
      return pg_catalog.format('unknown variable {{%s}}; known: %s', v_match[1],
        pg_catalog.array_to_string(app_hidden.nurture_template_variables(), ', '));
    end if;
  end loop;
  v_rest := pg_catalog.regexp_replace(template, v_pattern, '', 'g');
  if pg_catalog.strpos(v_rest, '{{') > 0 or pg_catalog.strpos(v_rest, '}}') > 0 then
    return pg_catalog.format('cannot read the placeholder near %s: write {{lead.first_name}} or {{lead.first_name | default: "there"}}',
      pg_catalog.quote_literal(pg_catalog.left(pg_catalog.substr(v_rest, greatest(pg_catalog.strpos(v_rest, '{{'), 1)), 40)));
  end if;
  return null;
end;
$$;
comment on function app_hidden.nurture_template_problem(text) is 'Null when the template is fine; otherwise what is wrong in words: an unknown variable (naming the known ones) or an unreadable placeholder.';

create function app_hidden.sending_window_problem(sending_window jsonb) returns text
  language plpgsql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_key text;
  v_day text;
begin
  if sending_window is null or sending_window = 'null'::jsonb then
    return null;
  end if;
  if pg_catalog.jsonb_typeof(sending_window) <> 'object' then
    return 'the sending window must be an object like {"days": ["mon","tue","wed","thu","fri"], "start": "09:00", "end": "17:00"}';
  end if;
  for v_key in select pg_catalog.jsonb_object_keys(sending_window) loop
    if v_key not in ('days', 'start', 'end') then
      return pg_catalog.format('the sending window has an unknown field %s (allowed: days, start, end)', pg_catalog.quote_literal(v_key));
    end if;
  end loop;
  if pg_catalog.jsonb_typeof(sending_window -> 'days') is distinct from 'array' or pg_catalog.jsonb_array_length(sending_window -> 'days') = 0 then
    return 'the sending window needs days, a non-empty list of mon, tue, wed, thu, fri, sat, sun';
  end if;
  for v_day in select pg_catalog.jsonb_array_elements_text(sending_window -> 'days') loop
    if v_day not in ('mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun') then
      return pg_catalog.format('the sending window has an unknown day %s (use mon, tue, wed, thu, fri, sat, sun)', pg_catalog.quote_literal(v_day));
    end if;
  end loop;
  if coalesce(sending_window ->> 'start', '') !~ '^([01][0-9]|2[0-3]):[0-5][0-9]$' or coalesce(sending_window ->> 'end', '') !~ '^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$' then
    return 'the sending window needs start and end as HH:MM in 24-hour time, e.g. "09:00" and "17:00"';
  end if;
  if (sending_window ->> 'start')::time >= (case when sending_window ->> 'end' = '24:00' then '24:00'::time else (sending_window ->> 'end')::time end) then
    return 'the sending window must start before it ends';
  end if;
  return null;
end;
$$;
comment on function app_hidden.sending_window_problem(jsonb) is 'Null when the sending window is fine (or absent); otherwise what is wrong in words. A window is {"days": [...], "start": "HH:MM", "end": "HH:MM"}, in the time zone of each lead.';

create function app_hidden.nurture_steps_problem(steps jsonb) returns text
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_step jsonb;
  v_n integer := 0;
  v_key text;
  v_channel text;
  v_problem text;
  v_unit text;
begin
  if steps is null or pg_catalog.jsonb_typeof(steps) <> 'array' or pg_catalog.jsonb_array_length(steps) = 0 then
    return 'steps must be a non-empty list of steps';
  end if;
  if pg_catalog.jsonb_array_length(steps) > 50 then
    return 'a sequence can have at most 50 steps';
  end if;
  for v_step in select s from pg_catalog.jsonb_array_elements(steps) s loop
    v_n := v_n + 1;
    if pg_catalog.jsonb_typeof(v_step) <> 'object' then
      return pg_catalog.format('step %s must be an object', v_n);
    end if;
    for v_key in select pg_catalog.jsonb_object_keys(v_step) loop
      if v_key not in ('name', 'channel', 'delay', 'after', 'subject', 'template', 'skip_if') then
        return pg_catalog.format('step %s has an unknown field %s (allowed: name, channel, delay, after, subject, template, skip_if)', v_n, pg_catalog.quote_literal(v_key));
      end if;
    end loop;
    v_channel := v_step ->> 'channel';
    if v_channel is null or v_channel not in ('sms', 'email') then
      return pg_catalog.format('step %s: channel must be sms or email', v_n);
    end if;
    if v_step ? 'delay' then
      if pg_catalog.jsonb_typeof(v_step -> 'delay') <> 'object' then
        return pg_catalog.format('step %s: delay must be an object like {"days": 2} (minutes, hours, days)', v_n);
      end if;
      for v_unit in select pg_catalog.jsonb_object_keys(v_step -> 'delay') loop
        if v_unit not in ('minutes', 'hours', 'days') then
          return pg_catalog.format('step %s: delay has an unknown unit %s (use minutes, hours, days)', v_n, pg_catalog.quote_literal(v_unit));
        end if;
        if pg_catalog.jsonb_typeof(v_step -> 'delay' -> v_unit) <> 'number' or (v_step -> 'delay' ->> v_unit) !~ '^[0-9]{1,6}$' then
          return pg_catalog.format('step %s: delay %s must be a whole number from 0', v_n, v_unit);
        end if;
      end loop;
      if coalesce((v_step -> 'delay' ->> 'days')::integer, 0) > 3650 then
        return pg_catalog.format('step %s: a delay can be at most 3650 days', v_n);
      end if;
    end if;
    if coalesce(v_step ->> 'after', 'previous') not in ('previous', 'enrollment') then
      return pg_catalog.format('step %s: after must be previous (the step before) or enrollment', v_n);
    end if;
    if pg_catalog.jsonb_typeof(v_step -> 'template') is distinct from 'string' or pg_catalog.btrim(v_step ->> 'template') = '' then
      return pg_catalog.format('step %s needs a template (the text to send)', v_n);
    end if;
    if v_channel = 'sms' and pg_catalog.length(v_step ->> 'template') > 1600 then
      return pg_catalog.format('step %s: a text template can be at most 1600 characters', v_n);
    end if;
    if v_channel = 'email' and pg_catalog.length(v_step ->> 'template') > 100000 then
      return pg_catalog.format('step %s: an email template can be at most 100000 characters', v_n);
    end if;
    v_problem := app_hidden.nurture_template_problem(v_step ->> 'template');
    if v_problem is not null then
      return pg_catalog.format('step %s template: %s', v_n, v_problem);
    end if;
    if v_channel = 'email' then
      if pg_catalog.jsonb_typeof(v_step -> 'subject') is distinct from 'string' or pg_catalog.btrim(v_step ->> 'subject') = ''
         or (v_step ->> 'subject') ~ '[\r\n]' or pg_catalog.length(v_step ->> 'subject') > 998 then
        return pg_catalog.format('step %s: an email step needs a subject of one line (at most 998 characters)', v_n);
      end if;
      v_problem := app_hidden.nurture_template_problem(v_step ->> 'subject');
      if v_problem is not null then
        return pg_catalog.format('step %s subject: %s', v_n, v_problem);
      end if;
    elsif v_step ? 'subject' then
      return pg_catalog.format('step %s: a text has no subject', v_n);
    end if;
    if v_step ? 'skip_if' then
      begin
        perform app_hidden.parse_lead_filter(v_step -> 'skip_if');
      exception when invalid_parameter_value then
        return pg_catalog.format('step %s skip_if: %s', v_n, sqlerrm);
      end;
    end if;
  end loop;
  return null;
end;
$$;
comment on function app_hidden.nurture_steps_problem(jsonb) is $$Null when the steps are fine; otherwise the first problem in words, naming the step. A step is {"channel": "sms" or "email", "delay": {"days": 2, "hours": 0, "minutes": 0}, "after": "previous" (default) or "enrollment", "subject": "..." (email only), "template": "Hi {{lead.first_name}}", "skip_if": <a lead filter of find_leads>, "name": "..."}.$$;

--------------------------------------------------------------------------------
-- Tables
--------------------------------------------------------------------------------

alter table app_public.business_settings add column nurture_stop_on_human_contact boolean not null default true;
comment on column app_public.business_settings.nurture_stop_on_human_contact is 'Stop the nurture sequences of a lead once it is assigned to someone and a person of the business texts it or marks it contacted (default true), as HubSpot does.';
grant update (nurture_stop_on_human_contact) on app_public.business_settings to :DATABASE_VISITOR;

create table app_public.nurture_sequences (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  name text not null,
  description text,
  status text not null default 'active',
  steps jsonb not null,
  sending_window jsonb,
  current_version integer not null default 1,
  stop_on_reply boolean not null default true,
  enroll_on_statuses text[] not null default '{}',
  enroll_segment_id uuid,
  enroll_new_segment_matches boolean not null default false,
  created_by_user_id uuid default app_public.current_user_id(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint nurture_sequences_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint nurture_sequences_id_must_be_unique_per_tenant unique (tenant_id, id),
  constraint nurture_sequences_name_must_be_unique_per_tenant unique (tenant_id, name),
  constraint nurture_sequences_name_must_not_be_empty check (pg_catalog.btrim(name) <> '' and pg_catalog.length(name) <= 200),
  constraint nurture_sequences_status_must_be_known check (status in ('active', 'paused', 'archived')),
  constraint nurture_sequences_segment_must_exist foreign key (tenant_id, enroll_segment_id) references app_public.segments (tenant_id, id) on delete set null (enroll_segment_id),
  constraint nurture_sequences_new_segment_matches_need_a_segment check (not enroll_new_segment_matches or enroll_segment_id is not null)
);
create index nurture_sequences_auto_enrolling on app_public.nurture_sequences (tenant_id)
  where status = 'active' and (enroll_on_statuses <> '{}' or enroll_new_segment_matches);
comment on table app_public.nurture_sequences is $$A nurture sequence: ordered steps (texts and emails) sent to the leads enrolled in it, each after a delay, inside the sending window, and always inside the legal hours and daily caps for texts. Editing steps or the sending window makes a new version; running enrollments keep the version they started with. Status active, paused (nothing is sent until resumed; due steps go out on resume) or archived (every enrollment stops; final). Owners, admins and managers edit; every member sees and enrolls.$$;
comment on column app_public.nurture_sequences.id is 'The sequence’s id.';
comment on column app_public.nurture_sequences.tenant_id is 'The tenant.';
comment on column app_public.nurture_sequences.name is 'Its name (unique in the tenant).';
comment on column app_public.nurture_sequences.description is 'What it is for.';
comment on column app_public.nurture_sequences.status is 'active, paused or archived.';
comment on column app_public.nurture_sequences.steps is $$The steps of the current version, in order: [{"channel": "sms", "delay": {"days": 0}, "template": "Hi {{lead.first_name | default: \"there\"}}, ..."}, {"channel": "email", "delay": {"days": 2}, "subject": "...", "template": "...", "skip_if": {"status": ["hot"]}}]. delay counts from the previous step (or from enrollment with "after": "enrollment"); days are calendar days in the lead’s time zone. Unknown variables are refused when saved.$$;
comment on column app_public.nurture_sequences.sending_window is $$When steps may go, in the lead’s time zone: {"days": ["mon","tue","wed","thu","fri"], "start": "09:00", "end": "17:00"}; null means any time (texts still keep to the legal hours). A due step outside it waits for the next opening.$$;
comment on column app_public.nurture_sequences.current_version is 'The version new enrollments get (see nurture_sequence_versions).';
comment on column app_public.nurture_sequences.stop_on_reply is 'Stop a lead’s enrollment when the lead texts back (default true).';
comment on column app_public.nurture_sequences.enroll_on_statuses is 'Enroll a lead automatically when it enters one of these statuses (not final ones).';
comment on column app_public.nurture_sequences.enroll_segment_id is 'The segment enrollSegmentInSequence uses by default, and whose new matches are enrolled when enroll_new_segment_matches.';
comment on column app_public.nurture_sequences.enroll_new_segment_matches is 'Enroll leads automatically as they come to match enroll_segment_id.';
comment on column app_public.nurture_sequences.created_by_user_id is 'Who created it.';
comment on column app_public.nurture_sequences.created_at is 'When it was created.';
comment on column app_public.nurture_sequences.updated_at is 'When it last changed.';

create table app_public.nurture_sequence_versions (
  tenant_id uuid not null,
  sequence_id uuid not null,
  version integer not null,
  steps jsonb not null,
  sending_window jsonb,
  created_by_user_id uuid,
  created_at timestamptz not null default now(),
  constraint nurture_sequence_versions_pkey primary key (tenant_id, sequence_id, version),
  constraint nurture_sequence_versions_sequence_must_exist foreign key (tenant_id, sequence_id) references app_public.nurture_sequences (tenant_id, id) on delete cascade,
  constraint nurture_sequence_versions_version_must_be_positive check (version > 0)
);
comment on table app_public.nurture_sequence_versions is '@behavior -insert -update -delete
Every version of the steps and sending window of a sequence, kept so that enrollments finish the version they started with. Written by the database when a sequence is created or its steps or window change; never edited.';
comment on column app_public.nurture_sequence_versions.tenant_id is 'The tenant.';
comment on column app_public.nurture_sequence_versions.sequence_id is 'The sequence.';
comment on column app_public.nurture_sequence_versions.version is 'Its number: 1, 2, ...';
comment on column app_public.nurture_sequence_versions.steps is 'The steps of this version.';
comment on column app_public.nurture_sequence_versions.sending_window is 'The sending window of this version.';
comment on column app_public.nurture_sequence_versions.created_by_user_id is 'Who saved it.';
comment on column app_public.nurture_sequence_versions.created_at is 'When it was saved.';

create table app_public.lead_sequence_enrollments (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  lead_id uuid not null,
  sequence_id uuid not null,
  version integer not null,
  status text not null default 'active',
  current_step integer not null default 0,
  next_step_number integer,
  next_step_at timestamptz,
  enrolled_via text not null,
  enrolled_by_user_id uuid,
  enrolled_at timestamptz not null,
  stopped_at timestamptz,
  stop_reason text,
  completed_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint lead_sequence_enrollments_id_must_be_unique_per_tenant unique (tenant_id, id),
  constraint lead_sequence_enrollments_lead_must_exist foreign key (tenant_id, lead_id) references app_public.leads (tenant_id, id) on delete cascade,
  constraint lead_sequence_enrollments_version_must_exist foreign key (tenant_id, sequence_id, version) references app_public.nurture_sequence_versions (tenant_id, sequence_id, version) on delete cascade,
  constraint lead_sequence_enrollments_status_must_be_known check (status in ('active', 'completed', 'stopped')),
  constraint lead_sequence_enrollments_enrolled_via_must_be_known check (enrolled_via in ('manual', 'segment', 'status', 'segment_match')),
  constraint lead_sequence_enrollments_stop_reason_must_be_known check (stop_reason in ('replied', 'opted_out', 'unsubscribed', 'dnc', 'lead_deleted', 'human_contact', 'final_status', 'unenrolled', 'sequence_archived')),
  constraint lead_sequence_enrollments_a_stopped_one_must_say_why check ((status = 'stopped') = (stop_reason is not null and stopped_at is not null)),
  constraint lead_sequence_enrollments_an_active_one_must_have_a_next_step check (status <> 'active' or (next_step_number is not null and next_step_at is not null))
);
create unique index lead_sequence_enrollments_one_active_per_lead_and_sequence on app_public.lead_sequence_enrollments (tenant_id, lead_id, sequence_id)
  where status = 'active';
create index lead_sequence_enrollments_by_sequence on app_public.lead_sequence_enrollments (tenant_id, sequence_id, status);
create index lead_sequence_enrollments_due on app_public.lead_sequence_enrollments (next_step_at) where status = 'active';
comment on table app_public.lead_sequence_enrollments is $$@behavior -insert -update -delete
A lead’s way through a sequence, at the version it was enrolled with: at most one active enrollment per lead and sequence. Status active (next_step_number is due at next_step_at, on the clock of the tenant), completed (every step ran), or stopped (stop_reason: replied, opted_out, unsubscribed, dnc, lead_deleted, human_contact, final_status, unenrolled, sequence_archived). Enroll with enrollLeadInSequence or enrollSegmentInSequence; stop with unenrollLeadFromSequence.$$;
comment on column app_public.lead_sequence_enrollments.id is 'The enrollment’s id.';
comment on column app_public.lead_sequence_enrollments.tenant_id is 'The tenant.';
comment on column app_public.lead_sequence_enrollments.lead_id is 'The lead.';
comment on column app_public.lead_sequence_enrollments.sequence_id is 'The sequence.';
comment on column app_public.lead_sequence_enrollments.version is 'The version of the sequence it follows.';
comment on column app_public.lead_sequence_enrollments.status is 'active, completed or stopped.';
comment on column app_public.lead_sequence_enrollments.current_step is 'The last step that ran (0: none yet).';
comment on column app_public.lead_sequence_enrollments.next_step_number is 'The step that runs next (null once finished).';
comment on column app_public.lead_sequence_enrollments.next_step_at is 'When it runs: already moved into the sending window and, for texts, the legal hours and daily cap.';
comment on column app_public.lead_sequence_enrollments.enrolled_via is 'manual, segment (enrolled with a segment), status (the lead entered a status) or segment_match (the lead came to match the segment).';
comment on column app_public.lead_sequence_enrollments.enrolled_by_user_id is 'Who enrolled it, when a person did.';
comment on column app_public.lead_sequence_enrollments.enrolled_at is 'When it was enrolled (on the clock of the tenant).';
comment on column app_public.lead_sequence_enrollments.stopped_at is 'When it stopped.';
comment on column app_public.lead_sequence_enrollments.stop_reason is 'Why it stopped.';
comment on column app_public.lead_sequence_enrollments.completed_at is 'When its last step ran.';
comment on column app_public.lead_sequence_enrollments.created_at is 'When the row was written (real time).';
comment on column app_public.lead_sequence_enrollments.updated_at is 'When it last changed.';

create table app_public.nurture_step_runs (
  id bigint generated always as identity primary key,
  tenant_id uuid not null,
  enrollment_id uuid not null,
  sequence_id uuid not null,
  version integer not null,
  step_number integer not null,
  channel text not null,
  outcome text not null,
  skip_reason text,
  message_id uuid,
  email_message_id uuid,
  ran_at timestamptz not null,
  constraint nurture_step_runs_enrollment_must_exist foreign key (tenant_id, enrollment_id) references app_public.lead_sequence_enrollments (tenant_id, id) on delete cascade,
  constraint nurture_step_runs_step_must_run_once_per_enrollment unique (tenant_id, enrollment_id, step_number),
  constraint nurture_step_runs_message_must_exist foreign key (tenant_id, message_id) references app_public.messages (tenant_id, id) on delete set null (message_id),
  constraint nurture_step_runs_email_must_exist foreign key (tenant_id, email_message_id) references app_public.email_messages (tenant_id, id) on delete set null (email_message_id),
  constraint nurture_step_runs_channel_must_be_known check (channel in ('sms', 'email')),
  constraint nurture_step_runs_outcome_must_be_known check (outcome in ('queued', 'skipped')),
  constraint nurture_step_runs_skip_reason_must_be_known check (skip_reason in ('condition', 'no_phone', 'no_email', 'no_sending_number'))
);
create index nurture_step_runs_by_sequence on app_public.nurture_step_runs (tenant_id, sequence_id, version, step_number);
comment on table app_public.nurture_step_runs is $$@behavior -insert -update -delete
One row per step that ran for an enrollment (unique: a step runs once): queued (its text or email is in the outbox; see message_id or email_message_id for what became of it) or skipped (skip_reason: condition, no_phone, no_email, no_sending_number).$$;
comment on column app_public.nurture_step_runs.id is 'The row’s id.';
comment on column app_public.nurture_step_runs.tenant_id is 'The tenant.';
comment on column app_public.nurture_step_runs.enrollment_id is 'The enrollment.';
comment on column app_public.nurture_step_runs.sequence_id is 'The sequence.';
comment on column app_public.nurture_step_runs.version is 'The version of the sequence.';
comment on column app_public.nurture_step_runs.step_number is 'The step (1 = first).';
comment on column app_public.nurture_step_runs.channel is 'sms or email.';
comment on column app_public.nurture_step_runs.outcome is 'queued or skipped.';
comment on column app_public.nurture_step_runs.skip_reason is 'Why it was skipped.';
comment on column app_public.nurture_step_runs.message_id is 'The text it queued.';
comment on column app_public.nurture_step_runs.email_message_id is 'The email it queued.';
comment on column app_public.nurture_step_runs.ran_at is 'When it ran (on the clock of the tenant).';

alter table app_public.messages add column nurture_enrollment_id uuid, add column nurture_step integer,
  add constraint messages_nurture_enrollment_must_exist foreign key (tenant_id, nurture_enrollment_id)
    references app_public.lead_sequence_enrollments (tenant_id, id) on delete set null (nurture_enrollment_id),
  add constraint messages_nurture_step_must_be_sent_once unique (tenant_id, nurture_enrollment_id, nurture_step);
comment on column app_public.messages.nurture_enrollment_id is 'The nurture enrollment that sent it.';
comment on column app_public.messages.nurture_step is 'The step of that enrollment (one outbox row per enrollment and step).';
alter table app_public.email_messages add column nurture_enrollment_id uuid, add column nurture_step integer,
  add constraint email_messages_nurture_enrollment_must_exist foreign key (tenant_id, nurture_enrollment_id)
    references app_public.lead_sequence_enrollments (tenant_id, id) on delete set null (nurture_enrollment_id),
  add constraint email_messages_nurture_step_must_be_sent_once unique (tenant_id, nurture_enrollment_id, nurture_step);
comment on column app_public.email_messages.nurture_enrollment_id is 'The nurture enrollment that sent it.';
comment on column app_public.email_messages.nurture_step is 'The step of that enrollment (one outbox row per enrollment and step).';

-- RLS before grants.
alter table app_public.nurture_sequences enable row level security;
alter table app_public.nurture_sequences force row level security;
create policy owner_all on app_public.nurture_sequences for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.nurture_sequences for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
create policy insert_current_tenant on app_public.nurture_sequences for insert to :DATABASE_VISITOR
  with check (tenant_id = (select app_public.current_tenant_id()));
create policy update_current_tenant on app_public.nurture_sequences for update to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()))
  with check (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.nurture_sequences to :DATABASE_VISITOR;
grant insert (tenant_id, name, description, status, steps, sending_window, stop_on_reply, enroll_on_statuses, enroll_segment_id,
  enroll_new_segment_matches) on app_public.nurture_sequences to :DATABASE_VISITOR;
grant update (name, description, status, steps, sending_window, stop_on_reply, enroll_on_statuses, enroll_segment_id,
  enroll_new_segment_matches) on app_public.nurture_sequences to :DATABASE_VISITOR;

alter table app_public.nurture_sequence_versions enable row level security;
alter table app_public.nurture_sequence_versions force row level security;
create policy owner_all on app_public.nurture_sequence_versions for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.nurture_sequence_versions for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.nurture_sequence_versions to :DATABASE_VISITOR;

alter table app_public.lead_sequence_enrollments enable row level security;
alter table app_public.lead_sequence_enrollments force row level security;
create policy owner_all on app_public.lead_sequence_enrollments for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.lead_sequence_enrollments for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.lead_sequence_enrollments to :DATABASE_VISITOR;

alter table app_public.nurture_step_runs enable row level security;
alter table app_public.nurture_step_runs force row level security;
create policy owner_all on app_public.nurture_step_runs for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.nurture_step_runs for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.nurture_step_runs to :DATABASE_VISITOR;

create trigger _100_timestamps before insert or update on app_public.nurture_sequences
  for each row execute function app_private.tg__timestamps();
create trigger _100_timestamps before insert or update on app_public.lead_sequence_enrollments
  for each row execute function app_private.tg__timestamps();

--------------------------------------------------------------------------------
-- Time: delays in the lead's time zone, sending windows, legal hours
--------------------------------------------------------------------------------

create function app_hidden.nurture_step_due(base timestamptz, delay jsonb, timezone text) returns timestamptz
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  -- Days are calendar days where the lead lives (10:00 stays 10:00 across a DST change); hours and minutes are elapsed time.
  select ((nurture_step_due.base at time zone nurture_step_due.timezone)
           + pg_catalog.make_interval(days => coalesce((nurture_step_due.delay ->> 'days')::integer, 0))) at time zone nurture_step_due.timezone
         + pg_catalog.make_interval(hours => coalesce((nurture_step_due.delay ->> 'hours')::integer, 0),
                                    mins => coalesce((nurture_step_due.delay ->> 'minutes')::integer, 0))
$$;
comment on function app_hidden.nurture_step_due(timestamptz, jsonb, text) is 'base plus a step delay ({"days", "hours", "minutes"}): days as calendar days in the time zone (the same wall-clock time across daylight saving changes), hours and minutes as elapsed time.';

create function app_hidden.next_in_sending_window(sending_window jsonb, timezone text, at timestamptz) returns timestamptz
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_local timestamp := next_in_sending_window.at at time zone next_in_sending_window.timezone;
  v_day date;
  v_start timestamptz;
  v_end timestamptz;
begin
  if sending_window is null or sending_window = 'null'::jsonb then
    return next_in_sending_window.at;
  end if;
  for i in 0..8 loop
    v_day := v_local::date + i;
    if (sending_window -> 'days') ? (array['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'])[pg_catalog.date_part('isodow', v_day)::integer] then
      v_start := (v_day + (sending_window ->> 'start')::time) at time zone next_in_sending_window.timezone;
      v_end := case when sending_window ->> 'end' = '24:00' then (v_day + 1)::timestamp
                    else v_day + (sending_window ->> 'end')::time end at time zone next_in_sending_window.timezone;
      if next_in_sending_window.at < v_start then
        return v_start;
      elsif next_in_sending_window.at < v_end then
        return next_in_sending_window.at;
      end if;
    end if;
  end loop;
  return null;
end;
$$;
comment on function app_hidden.next_in_sending_window(jsonb, text, timestamptz) is 'The first moment at or after at inside the sending window ({"days", "start", "end"}) in the time zone; at itself when there is no window.';

create function app_private.nurture_send_time(tenant_id uuid, lead_id uuid, channel text, sending_window jsonb, at timestamptz)
  returns timestamptz
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_lead app_public.leads;
  v_at timestamptz := nurture_send_time.at;
  v_next timestamptz;
begin
  select l.* into v_lead from app_public.leads l where l.tenant_id = nurture_send_time.tenant_id and l.id = nurture_send_time.lead_id;
  -- Each rule may push the time into a gap of the other; stop when neither moves it.
  for i in 1..20 loop
    v_next := app_hidden.next_in_sending_window(nurture_send_time.sending_window, coalesce(v_lead.timezone, 'UTC'), v_at);
    if nurture_send_time.channel = 'sms' and v_lead.phone is not null then
      v_next := app_private.sms_marketing_send_time(nurture_send_time.tenant_id, v_lead.id, v_lead.phone, v_next);
    end if;
    if v_next = v_at then
      return v_at;
    end if;
    v_at := v_next;
  end loop;
  return v_at;
end;
$$;
comment on function app_private.nurture_send_time(uuid, uuid, text, jsonb, timestamptz) is 'The first moment at or after at when a nurture step may go to the lead: inside the sending window of the sequence (in the lead’s time zone) and, for texts, inside the legal hours and under the daily cap (sms_marketing_send_time).';

--------------------------------------------------------------------------------
-- Rendering
--------------------------------------------------------------------------------

create function app_private.render_nurture_template(template text, tenant_id uuid, lead_id uuid) returns text
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_values jsonb;
  v_match text[];
  v_out text := render_nurture_template.template;
begin
  select pg_catalog.jsonb_build_object(
      'lead.first_name', l.first_name, 'lead.last_name', l.last_name, 'lead.full_name', nullif(l.full_name, ''),
      'lead.email', l.email, 'lead.phone', l.phone, 'lead.address', l.address, 'lead.city', l.city, 'lead.region', l.region,
      'lead.postal_code', l.postal_code, 'lead.job_type', l.job_type, 'lead.event_type', l.event_type,
      'lead.event_date', pg_catalog.to_char(l.event_date, 'FMMonth FMDD, YYYY'), 'lead.service_line', l.service_line,
      'lead.source', l.source, 'lead.status', l.status,
      'tenant.business_name', t.business_name, 'tenant.trade_type', t.trade_type,
      'tenant.phone', (select p.phone_number from app_public.phone_numbers p
                       where p.tenant_id = l.tenant_id and p.status = 'active' and 'sms' = any (p.capabilities)
                       order by p.date_provisioned, p.id limit 1),
      'owner.first_name', pr.first_name, 'owner.last_name', pr.last_name,
      'owner.full_name', nullif(pg_catalog.btrim(coalesce(pr.first_name, '') || ' ' || coalesce(pr.last_name, '')), ''))
    into v_values
  from app_public.leads l
  join app_public.tenants t on t.id = l.tenant_id
  left join app_public.user_profiles pr on pr.tenant_id = l.tenant_id and pr.user_id = l.owner_user_id
  where l.tenant_id = render_nurture_template.tenant_id and l.id = render_nurture_template.lead_id;
  for v_match in
    select pg_catalog.regexp_matches(render_nurture_template.template,
      '(\{\{\s*([a-z_]+\.[a-z_]+)\s*(?:\|\s*default:\s*"([^"{}]*)"\s*)?\}\})', 'g')
  loop
    v_out := pg_catalog.replace(v_out, v_match[1], coalesce(nullif(pg_catalog.btrim(v_values ->> v_match[2]), ''), v_match[3], ''));
  end loop;
  return v_out;
end;
$$;
comment on function app_private.render_nurture_template(text, uuid, uuid) is 'The template with every {{variable}} replaced by the value of the lead, its tenant or its owner; an empty value becomes the default given in the placeholder, else nothing.';

--------------------------------------------------------------------------------
-- Scheduling, enrolling, running, stopping
--------------------------------------------------------------------------------

create function app_private.schedule_nurture_step(enrollment_id uuid) returns void
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
  perform graphile_worker.add_job('nurture__run_step',
    pg_catalog.json_build_object('enrollment_id', v_enrollment.id, 'step', v_enrollment.next_step_number),
    run_at => app_hidden.clock_to_real(v_enrollment.tenant_id, v_enrollment.next_step_at),
    job_key => 'nurture:' || v_enrollment.id || ':' || v_enrollment.next_step_number, max_attempts => 10);
end;
$$;
comment on function app_private.schedule_nurture_step(uuid) is 'Enqueues (or moves) the nurture__run_step job of the next step of an active enrollment at next_step_at (on the clock of the tenant), keyed nurture:<enrollment>:<step> so that rescheduling replaces rather than duplicates.';

create function app_private.plan_next_nurture_step(enrollment_id uuid, base timestamptz) returns app_public.lead_sequence_enrollments
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_enrollment app_public.lead_sequence_enrollments;
  v_version app_public.nurture_sequence_versions;
  v_step jsonb;
  v_timezone text;
  v_due timestamptz;
begin
  select e.* into v_enrollment from app_public.lead_sequence_enrollments e where e.id = plan_next_nurture_step.enrollment_id;
  select v.* into v_version from app_public.nurture_sequence_versions v
  where v.tenant_id = v_enrollment.tenant_id and v.sequence_id = v_enrollment.sequence_id and v.version = v_enrollment.version;
  if v_enrollment.current_step >= pg_catalog.jsonb_array_length(v_version.steps) then
    update app_public.lead_sequence_enrollments e
    set status = 'completed', completed_at = app_hidden.clock_now(e.tenant_id), next_step_number = null, next_step_at = null
    where e.id = v_enrollment.id
    returning e.* into v_enrollment;
    return v_enrollment;
  end if;
  v_step := v_version.steps -> v_enrollment.current_step;
  select coalesce(l.timezone, 'UTC') into v_timezone from app_public.leads l where l.tenant_id = v_enrollment.tenant_id and l.id = v_enrollment.lead_id;
  v_due := app_hidden.nurture_step_due(
    case when v_step ->> 'after' = 'enrollment' then v_enrollment.enrolled_at else plan_next_nurture_step.base end,
    v_step -> 'delay', v_timezone);
  -- Never before the step that came first.
  v_due := greatest(v_due, plan_next_nurture_step.base);
  v_due := app_private.nurture_send_time(v_enrollment.tenant_id, v_enrollment.lead_id, v_step ->> 'channel', v_version.sending_window, v_due);
  update app_public.lead_sequence_enrollments e
  set next_step_number = v_enrollment.current_step + 1, next_step_at = v_due
  where e.id = v_enrollment.id
  returning e.* into v_enrollment;
  perform app_private.schedule_nurture_step(v_enrollment.id);
  return v_enrollment;
end;
$$;
comment on function app_private.plan_next_nurture_step(uuid, timestamptz) is 'Works out when the step after current_step runs (its delay from base, the previous step, or from enrollment; then moved into the sending window, legal hours and daily cap) and schedules its job; or completes the enrollment when no step is left.';

create function app_private.enroll_lead(tenant_id uuid, sequence_id uuid, lead_id uuid, via text, user_id uuid default null)
  returns app_public.lead_sequence_enrollments
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_sequence app_public.nurture_sequences;
  v_lead app_public.leads;
  v_enrollment app_public.lead_sequence_enrollments;
begin
  select s.* into v_sequence from app_public.nurture_sequences s
  where s.tenant_id = enroll_lead.tenant_id and s.id = enroll_lead.sequence_id;
  if not found then
    raise exception 'No nurture sequence % in this tenant', enroll_lead.sequence_id using errcode = 'P0002';
  end if;
  if v_sequence.status <> 'active' then
    raise exception 'The sequence "%" is %: only active sequences take new leads', v_sequence.name, v_sequence.status using errcode = '22023';
  end if;
  select l.* into v_lead from app_public.leads l
  where l.tenant_id = enroll_lead.tenant_id and l.id = enroll_lead.lead_id and l.deleted_at is null;
  if not found then
    raise exception 'No lead % in this tenant', enroll_lead.lead_id using errcode = 'P0002';
  end if;
  if v_lead.status = 'dnc' or (v_lead.phone is not null and app_public.is_on_dnc_list(v_lead.phone, v_lead.tenant_id)) then
    raise exception 'This lead is on the do-not-contact list: it cannot be enrolled in a nurture sequence' using errcode = 'SB001';
  end if;
  if exists (select 1 from app_public.lead_statuses s where s.status = v_lead.status and s.is_final) then
    raise exception 'This lead is %, a final status: nurture sequences are for open leads', v_lead.status using errcode = '22023';
  end if;
  insert into app_public.lead_sequence_enrollments as e (tenant_id, lead_id, sequence_id, version, status, current_step,
    next_step_number, next_step_at, enrolled_via, enrolled_by_user_id, enrolled_at)
  values (enroll_lead.tenant_id, v_lead.id, v_sequence.id, v_sequence.current_version, 'active', 0,
    1, app_hidden.clock_now(enroll_lead.tenant_id), enroll_lead.via, enroll_lead.user_id, app_hidden.clock_now(enroll_lead.tenant_id))
  on conflict (tenant_id, lead_id, sequence_id) where status = 'active' do nothing
  returning e.* into v_enrollment;
  if v_enrollment.id is null then
    return null;
  end if;
  return app_private.plan_next_nurture_step(v_enrollment.id, v_enrollment.enrolled_at);
end;
$$;
comment on function app_private.enroll_lead(uuid, uuid, uuid, text, uuid) is 'Enrolls a lead in an active sequence at its current version and schedules the first step; null when the lead already has an active enrollment in it (also under concurrency). Errors: P0002 no such sequence or lead; 22023 the sequence is paused or archived, or the lead has a final status; SB001 the lead is on the do-not-contact list.';

create function app_private.nurture_lead_opted_out(tenant_id uuid, lead_id uuid) returns text
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select case
    when l.status = 'dnc' then 'dnc'
    when l.phone is not null and exists (select 1 from app_public.dnc_list d where d.tenant_id = l.tenant_id and d.phone = l.phone)
      then coalesce((select case when d.source = 'sms_opt_out' then 'opted_out' else 'dnc' end from app_public.dnc_list d
                     where d.tenant_id = l.tenant_id and d.phone = l.phone), 'dnc')
    when l.email is not null and app_private.is_email_suppressed(l.tenant_id, l.email::text) then 'unsubscribed'
  end
  from app_public.leads l
  where l.tenant_id = nurture_lead_opted_out.tenant_id and l.id = nurture_lead_opted_out.lead_id
$$;
comment on function app_private.nurture_lead_opted_out(uuid, uuid) is 'Why nurture may no longer reach the lead on any channel: opted_out (texted STOP), dnc (on the do-not-contact list, or status dnc) or unsubscribed (email suppression list); null when it may. An opt-out on one channel ends nurture on both.';

create function app_private.stop_enrollment(enrollment_id uuid, reason text) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_enrollment app_public.lead_sequence_enrollments;
begin
  select e.* into v_enrollment from app_public.lead_sequence_enrollments e
  where e.id = stop_enrollment.enrollment_id and e.status = 'active'
  for update;
  if not found then
    return false;
  end if;
  update app_public.lead_sequence_enrollments e
  set status = 'stopped', stop_reason = stop_enrollment.reason, stopped_at = app_hidden.clock_now(e.tenant_id),
      next_step_number = null, next_step_at = null
  where e.id = v_enrollment.id;
  -- What it queued and is still waiting (e.g. for the legal hours) does not go either.
  update app_public.messages m
  set status = 'canceled', failed_at = now(), error_message = 'Canceled: the nurture enrollment stopped (' || stop_enrollment.reason || ')'
  where m.tenant_id = v_enrollment.tenant_id and m.nurture_enrollment_id = v_enrollment.id and m.status = 'queued';
  update app_public.email_messages em
  set status = 'canceled', failed_at = now(), error_message = 'Canceled: the nurture enrollment stopped (' || stop_enrollment.reason || ')'
  where em.tenant_id = v_enrollment.tenant_id and em.nurture_enrollment_id = v_enrollment.id and em.status = 'queued';
  perform graphile_worker.remove_job('nurture:' || v_enrollment.id || ':' || v_enrollment.next_step_number);
  return true;
end;
$$;
comment on function app_private.stop_enrollment(uuid, text) is 'Stops an active enrollment with a reason: no further step runs, its queued texts and emails are canceled, its pending job is removed. Returns false when it was not active.';

create function app_private.stop_lead_enrollments(tenant_id uuid, lead_id uuid, reason text) returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_id uuid;
  v_count integer := 0;
begin
  for v_id in
    select e.id from app_public.lead_sequence_enrollments e
    join app_public.nurture_sequences s on s.tenant_id = e.tenant_id and s.id = e.sequence_id
    where e.tenant_id = stop_lead_enrollments.tenant_id and e.lead_id = stop_lead_enrollments.lead_id and e.status = 'active'
      and (stop_lead_enrollments.reason <> 'replied' or s.stop_on_reply)
    order by e.id
    for update of e
  loop
    if app_private.stop_enrollment(v_id, stop_lead_enrollments.reason) then
      v_count := v_count + 1;
    end if;
  end loop;
  -- A completed enrollment may have left its last text or email waiting (legal hours, a cap): it goes no more either.
  update app_public.messages m
  set status = 'canceled', failed_at = now(), error_message = 'Canceled: nurture stopped for this lead (' || stop_lead_enrollments.reason || ')'
  from app_public.lead_sequence_enrollments e
  join app_public.nurture_sequences s on s.tenant_id = e.tenant_id and s.id = e.sequence_id
  where m.tenant_id = stop_lead_enrollments.tenant_id and m.lead_id = stop_lead_enrollments.lead_id and m.status = 'queued'
    and e.tenant_id = m.tenant_id and e.id = m.nurture_enrollment_id
    and (stop_lead_enrollments.reason <> 'replied' or s.stop_on_reply);
  update app_public.email_messages em
  set status = 'canceled', failed_at = now(), error_message = 'Canceled: nurture stopped for this lead (' || stop_lead_enrollments.reason || ')'
  from app_public.lead_sequence_enrollments e
  join app_public.nurture_sequences s on s.tenant_id = e.tenant_id and s.id = e.sequence_id
  where em.tenant_id = stop_lead_enrollments.tenant_id and em.lead_id = stop_lead_enrollments.lead_id and em.status = 'queued'
    and e.tenant_id = em.tenant_id and e.id = em.nurture_enrollment_id
    and (stop_lead_enrollments.reason <> 'replied' or s.stop_on_reply);
  return v_count;
end;
$$;
comment on function app_private.stop_lead_enrollments(uuid, uuid, text) is 'Stops every active enrollment of a lead with the reason (replied only stops sequences with stop_on_reply), and cancels the nurture texts and emails its completed enrollments left waiting in the outboxes. Returns how many enrollments stopped.';

create function app_private.run_nurture_step(enrollment_id uuid, step_number integer) returns text
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_enrollment app_public.lead_sequence_enrollments;
  v_sequence app_public.nurture_sequences;
  v_version app_public.nurture_sequence_versions;
  v_lead app_public.leads;
  v_step jsonb;
  v_channel text;
  v_now timestamptz;
  v_at timestamptz;
  v_from text;
  v_skip text;
  v_message app_public.messages;
  v_email app_public.email_messages;
  v_key text;
  v_opted_out text;
begin
  select e.* into v_enrollment from app_public.lead_sequence_enrollments e where e.id = run_nurture_step.enrollment_id for update;
  if not found then
    return 'missing';
  end if;
  if v_enrollment.status <> 'active' then
    return 'not_active';
  end if;
  if v_enrollment.next_step_number <> run_nurture_step.step_number then
    return 'stale';
  end if;
  select s.* into v_sequence from app_public.nurture_sequences s where s.tenant_id = v_enrollment.tenant_id and s.id = v_enrollment.sequence_id;
  if v_sequence.status = 'paused' then
    return 'paused';
  end if;
  v_now := app_hidden.clock_now(v_enrollment.tenant_id);
  if v_enrollment.next_step_at > v_now + interval '1 second' then
    perform app_private.schedule_nurture_step(v_enrollment.id);
    return 'not_due';
  end if;
  select l.* into v_lead from app_public.leads l where l.tenant_id = v_enrollment.tenant_id and l.id = v_enrollment.lead_id;
  if v_lead.deleted_at is not null then
    perform app_private.stop_enrollment(v_enrollment.id, 'lead_deleted');
    return 'stopped';
  end if;
  if exists (select 1 from app_public.lead_statuses st where st.status = v_lead.status and st.is_final) then
    perform app_private.stop_enrollment(v_enrollment.id, case when v_lead.status = 'dnc' then 'dnc' else 'final_status' end);
    return 'stopped';
  end if;
  select v.* into v_version from app_public.nurture_sequence_versions v
  where v.tenant_id = v_enrollment.tenant_id and v.sequence_id = v_enrollment.sequence_id and v.version = v_enrollment.version;
  v_step := v_version.steps -> (run_nurture_step.step_number - 1);
  v_channel := v_step ->> 'channel';

  -- Outside the sending window now (a resumed sequence, a late worker): wait for the next opening.
  v_at := app_hidden.next_in_sending_window(v_version.sending_window, coalesce(v_lead.timezone, 'UTC'), v_now);
  if v_at > v_now + interval '1 second' then
    update app_public.lead_sequence_enrollments e set next_step_at = v_at where e.id = v_enrollment.id;
    perform app_private.schedule_nurture_step(v_enrollment.id);
    return 'moved';
  end if;

  if v_step ? 'skip_if' and app_hidden.lead_matches_filter(v_enrollment.tenant_id, v_lead.id, v_step -> 'skip_if') then
    v_skip := 'condition';
  elsif v_channel = 'sms' and v_lead.phone is null then
    v_skip := 'no_phone';
  elsif v_channel = 'email' and v_lead.email is null then
    v_skip := 'no_email';
  end if;
  -- An opt-out on either channel ends nurture on both (the stop triggers normally got here first).
  v_opted_out := app_private.nurture_lead_opted_out(v_lead.tenant_id, v_lead.id);
  if v_opted_out is not null then
    perform app_private.stop_enrollment(v_enrollment.id, v_opted_out);
    return 'stopped';
  end if;
  if v_skip is null and v_channel = 'sms' then
    select p.phone_number into v_from from app_public.phone_numbers p
    where p.tenant_id = v_enrollment.tenant_id and p.status = 'active' and 'sms' = any (p.capabilities)
    order by p.date_provisioned, p.id limit 1;
    if v_from is null then
      v_skip := 'no_sending_number';
    end if;
  end if;

  v_key := 'nurture:' || v_enrollment.id || ':' || run_nurture_step.step_number;
  if v_skip is null and v_channel = 'sms' then
    v_message := app_private.queue_message(v_enrollment.tenant_id, v_lead.phone, v_from,
      pg_catalog.left(app_private.render_nurture_template(v_step ->> 'template', v_enrollment.tenant_id, v_lead.id), 1600),
      'nurture', 'system', null, v_lead.id, v_key, v_now);
    update app_public.messages m set nurture_enrollment_id = v_enrollment.id, nurture_step = run_nurture_step.step_number
    where m.id = v_message.id;
  elsif v_skip is null then
    v_email := app_private.queue_email(v_enrollment.tenant_id, v_lead.email::text,
      pg_catalog.left(pg_catalog.btrim(app_private.render_nurture_template(v_step ->> 'subject', v_enrollment.tenant_id, v_lead.id)), 998),
      app_private.render_nurture_template(v_step ->> 'template', v_enrollment.tenant_id, v_lead.id),
      'nurture', v_lead.id, null, v_key, null, v_now);
    update app_public.email_messages em set nurture_enrollment_id = v_enrollment.id, nurture_step = run_nurture_step.step_number
    where em.id = v_email.id;
  end if;
  insert into app_public.nurture_step_runs (tenant_id, enrollment_id, sequence_id, version, step_number, channel, outcome,
    skip_reason, message_id, email_message_id, ran_at)
  values (v_enrollment.tenant_id, v_enrollment.id, v_enrollment.sequence_id, v_enrollment.version, run_nurture_step.step_number,
    v_channel, case when v_skip is null then 'queued' else 'skipped' end, v_skip, v_message.id, v_email.id, v_now);
  update app_public.lead_sequence_enrollments e set current_step = run_nurture_step.step_number where e.id = v_enrollment.id;
  perform app_private.plan_next_nurture_step(v_enrollment.id,
    greatest(v_now, coalesce(v_message.scheduled_for, v_email.scheduled_for, v_now)));
  return case when v_skip is null then 'queued' else 'skipped' end;
end;
$$;
comment on function app_private.run_nurture_step(uuid, integer) is $$Runs one step of one enrollment, once (run by the nurture__run_step job; the enrollment row is locked, and the step must be the one due): renders the template, queues the text or email in its outbox with the key nurture:<enrollment>:<step> (the outbox rules apply: do-not-contact, suppression, legal hours, daily caps), records the run, and plans the next step. Returns queued, skipped (skip_if matched, or no phone, email or texting number), moved (outside the sending window: waits for it), stopped (the lead was deleted, reached a final status, opted out or unsubscribed), not_due, paused, stale (another run got there first), not_active or missing.$$;

create function app_private.sweep_nurture(grace interval default interval '10 minutes') returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_id uuid;
  v_count integer := 0;
begin
  for v_id in
    select e.id from app_public.lead_sequence_enrollments e
    join app_public.nurture_sequences s on s.tenant_id = e.tenant_id and s.id = e.sequence_id and s.status = 'active'
    where e.status = 'active' and e.next_step_at <= app_hidden.clock_now(e.tenant_id) - sweep_nurture.grace
    order by e.next_step_at
    limit 5000
  loop
    perform app_private.schedule_nurture_step(v_id);
    v_count := v_count + 1;
  end loop;
  return v_count;
end;
$$;
comment on function app_private.sweep_nurture(interval) is 'Gives every active enrollment of an active sequence whose step is overdue by more than grace its job again (a job that failed for good, or was lost): run every minute by the nurture__sweep cron task. A duplicate is harmless: only the run of the due step does anything.';

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
    perform graphile_worker.add_job('nurture__run_step',
      (select pg_catalog.json_build_object('enrollment_id', e.id, 'step', e.next_step_number) from app_public.lead_sequence_enrollments e where e.id = v_id),
      job_key => (select 'nurture:' || e.id || ':' || e.next_step_number from app_public.lead_sequence_enrollments e where e.id = v_id),
      max_attempts => 10);
    v_count := v_count + 1;
  end loop;
  return v_count;
end;
$$;
comment on function app_private.wake_due_jobs(uuid) is 'After the clock of a tenant moved forward: everything of the tenant now due by its clock (queued emails and texts, nurture steps) gets its job at once instead of at the real time it was placed at. Returns how many jobs were moved.';

--------------------------------------------------------------------------------
-- Sequences: who may edit, versions, status changes
--------------------------------------------------------------------------------

create function app_hidden.is_trusted_caller(relation regclass) returns boolean
  language sql stable
  -- SECURITY INVOKER on purpose: it must see who is really acting.
  set search_path to pg_catalog, public, pg_temp
as $$
  select coalesce((
    select r.rolsuper or c.relowner = r.oid
    from pg_catalog.pg_class c, pg_catalog.pg_roles r
    where c.oid = is_trusted_caller.relation and r.rolname = current_user), false)
$$;
comment on function app_hidden.is_trusted_caller(regclass) is 'True when the current role is a superuser or owns the table (migrations, the worker, SECURITY DEFINER functions): triggers that check the role of a member let these through.';
grant execute on function app_hidden.is_trusted_caller(regclass) to :DATABASE_VISITOR;

create function app_private.tg_nurture_sequences__require_manager() returns trigger
  language plpgsql volatile
  -- SECURITY INVOKER on purpose: it must see who is really acting.
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if app_hidden.is_trusted_caller(TG_RELID) then
    return NEW;
  end if;
  if NEW.tenant_id is distinct from app_public.current_tenant_id() then
    raise exception 'You can only % nurture sequences of your current tenant', case TG_OP when 'INSERT' then 'create' else 'change' end
      using errcode = '42501';
  end if;
  if not app_hidden.current_user_has_role('manager') then
    raise exception 'Only owners, admins and managers can % nurture sequences', case TG_OP when 'INSERT' then 'create' else 'change' end
      using errcode = '42501';
  end if;
  return NEW;
end;
$$;
comment on function app_private.tg_nurture_sequences__require_manager() is 'Trigger (_050_require_manager): raises 42501 unless an owner, admin or manager of the current tenant (or the table owner) creates or changes a sequence of that tenant, before anything else is checked.';

create function app_private.tg_nurture_sequences__version() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_problem text;
  v_status text;
begin
  if TG_OP = 'UPDATE' and OLD.status = 'archived' then
    raise exception 'The sequence "%" is archived and can no longer change', OLD.name using errcode = '22023';
  end if;
  NEW.name := pg_catalog.btrim(NEW.name);
  v_problem := app_hidden.nurture_steps_problem(NEW.steps);
  if v_problem is not null then
    raise exception 'Invalid steps: %', v_problem using errcode = '22023';
  end if;
  if NEW.sending_window = 'null'::jsonb then
    NEW.sending_window := null;
  end if;
  v_problem := app_hidden.sending_window_problem(NEW.sending_window);
  if v_problem is not null then
    raise exception 'Invalid sending window: %', v_problem using errcode = '22023';
  end if;
  foreach v_status in array NEW.enroll_on_statuses loop
    if not exists (select 1 from app_public.lead_statuses s where s.status = v_status and not s.is_final) then
      raise exception 'enroll_on_statuses: % is not an open lead status (the final ones, won, recruited, lost and dnc, end nurturing)', pg_catalog.quote_literal(v_status)
        using errcode = '22023';
    end if;
  end loop;
  if TG_OP = 'INSERT' then
    NEW.current_version := 1;
  elsif NEW.steps is distinct from OLD.steps or NEW.sending_window is distinct from OLD.sending_window then
    NEW.current_version := OLD.current_version + 1;
  else
    NEW.current_version := OLD.current_version;
  end if;
  return NEW;
end;
$$;
comment on function app_private.tg_nurture_sequences__version() is 'Trigger (_200_version, before insert or update): validates steps (every template variable known), the sending window and the auto-enrollment statuses (22023 with the reason, naming the step), refuses changes to an archived sequence, and counts a new version when the steps or the window change.';

create function app_private.tg_nurture_sequences__status_changed() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_id uuid;
  v_enrollment app_public.lead_sequence_enrollments;
begin
  if TG_OP = 'INSERT' or NEW.current_version <> OLD.current_version then
    insert into app_public.nurture_sequence_versions (tenant_id, sequence_id, version, steps, sending_window, created_by_user_id)
    values (NEW.tenant_id, NEW.id, NEW.current_version, NEW.steps, NEW.sending_window, app_public.current_user_id());
  end if;
  if TG_OP = 'UPDATE' and NEW.status = 'archived' and OLD.status <> 'archived' then
    for v_id in
      select e.id from app_public.lead_sequence_enrollments e
      where e.tenant_id = NEW.tenant_id and e.sequence_id = NEW.id and e.status = 'active' order by e.id
    loop
      perform app_private.stop_enrollment(v_id, 'sequence_archived');
    end loop;
  elsif TG_OP = 'UPDATE' and NEW.status = 'active' and OLD.status = 'paused' then
    -- Resumed: what fell due while paused goes now (inside the window and legal hours), the rest keeps its time.
    for v_enrollment in
      select e.* from app_public.lead_sequence_enrollments e
      where e.tenant_id = NEW.tenant_id and e.sequence_id = NEW.id and e.status = 'active' order by e.id
    loop
      if v_enrollment.next_step_at < app_hidden.clock_now(NEW.tenant_id) then
        update app_public.lead_sequence_enrollments e
        set next_step_at = app_private.nurture_send_time(e.tenant_id, e.lead_id,
              (select v.steps -> (e.next_step_number - 1) ->> 'channel' from app_public.nurture_sequence_versions v
               where v.tenant_id = e.tenant_id and v.sequence_id = e.sequence_id and v.version = e.version),
              (select v.sending_window from app_public.nurture_sequence_versions v
               where v.tenant_id = e.tenant_id and v.sequence_id = e.sequence_id and v.version = e.version),
              app_hidden.clock_now(e.tenant_id))
        where e.id = v_enrollment.id;
      end if;
      perform app_private.schedule_nurture_step(v_enrollment.id);
    end loop;
  end if;
  return null;
end;
$$;
comment on function app_private.tg_nurture_sequences__status_changed() is 'Trigger (_500_versions_and_status, after insert or update): keeps every version in nurture_sequence_versions; archiving stops every active enrollment (sequence_archived); resuming a paused sequence schedules the steps that fell due meanwhile (inside the window and legal hours).';

create trigger _050_require_manager before insert or update on app_public.nurture_sequences
  for each row execute function app_private.tg_nurture_sequences__require_manager();
create trigger _200_version before insert or update on app_public.nurture_sequences
  for each row execute function app_private.tg_nurture_sequences__version();
create trigger _500_versions_and_status after insert or update on app_public.nurture_sequences
  for each row execute function app_private.tg_nurture_sequences__status_changed();

--------------------------------------------------------------------------------
-- What stops an enrollment, and what enrolls a lead by itself
--------------------------------------------------------------------------------

create function app_private.tg_leads__nurture() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_sequence app_public.nurture_sequences;
  v_final boolean;
begin
  if TG_OP = 'UPDATE' and NEW.deleted_at is not null and OLD.deleted_at is null then
    perform app_private.stop_lead_enrollments(NEW.tenant_id, NEW.id, 'lead_deleted');
    return null;
  end if;
  if NEW.deleted_at is not null then
    return null;
  end if;
  if TG_OP = 'UPDATE' and NEW.status is distinct from OLD.status then
    select s.is_final into v_final from app_public.lead_statuses s where s.status = NEW.status;
    if v_final then
      perform app_private.stop_lead_enrollments(NEW.tenant_id, NEW.id, case when NEW.status = 'dnc' then 'dnc' else 'final_status' end);
      return null;
    end if;
    -- A person of the business marked an assigned lead contacted.
    if NEW.status = 'contacted' and NEW.owner_user_id is not null and app_public.current_user_id() is not null
       and coalesce((select bs.nurture_stop_on_human_contact from app_public.business_settings bs where bs.tenant_id = NEW.tenant_id), true) then
      perform app_private.stop_lead_enrollments(NEW.tenant_id, NEW.id, 'human_contact');
    end if;
  end if;
  -- Auto-enrollment: only for tenants with auto-enrolling sequences (partial index), so other writes pay one probe.
  for v_sequence in
    select s.* from app_public.nurture_sequences s
    where s.tenant_id = NEW.tenant_id and s.status = 'active' and (s.enroll_on_statuses <> '{}' or s.enroll_new_segment_matches)
    order by s.created_at, s.id
  loop
    if NEW.status = any (v_sequence.enroll_on_statuses) and (TG_OP = 'INSERT' or NEW.status is distinct from OLD.status) then
      begin
        perform app_private.enroll_lead(NEW.tenant_id, v_sequence.id, NEW.id, 'status');
      exception when sqlstate 'SB001' or sqlstate '22023' then
        null;  -- not enrollable (do-not-contact, final status): nothing to do
      end;
    elsif v_sequence.enroll_new_segment_matches
          and not exists (select 1 from app_public.lead_sequence_enrollments e
                          where e.tenant_id = NEW.tenant_id and e.lead_id = NEW.id and e.sequence_id = v_sequence.id)
          and app_hidden.lead_matches_filter(NEW.tenant_id, NEW.id,
                (select sg.filter from app_public.segments sg where sg.tenant_id = NEW.tenant_id and sg.id = v_sequence.enroll_segment_id)) then
      begin
        perform app_private.enroll_lead(NEW.tenant_id, v_sequence.id, NEW.id, 'segment_match');
      exception when sqlstate 'SB001' or sqlstate '22023' then
        null;
      end;
    end if;
  end loop;
  return null;
end;
$$;
comment on function app_private.tg_leads__nurture() is 'Trigger (_800_nurture, after insert, or an update of a column a status rule or segment filter reads): deleting a lead stops its enrollments (lead_deleted); a final status stops them (final_status, or dnc); marking an assigned lead contacted as a person stops them (human_contact) when the tenant says nurture_stop_on_human_contact. Then enrolls the lead in active sequences that take leads entering its new status, or that take new matches of their segment (once per lead and sequence).';

create trigger _800_nurture after insert or update of status, deleted_at, tags, lead_score, source, city, region, owner_user_id,
    first_name, last_name, email, phone on app_public.leads
  for each row execute function app_private.tg_leads__nurture();

create function app_private.tg_messages__nurture_stop() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if NEW.lead_id is null then
    return null;
  end if;
  if NEW.direction = 'inbound' then
    -- An opt-out word is recorded as opted_out by the do-not-contact trigger, not as a reply.
    if app_public.sms_keyword(NEW.body) is distinct from 'opt_out' then
      perform app_private.stop_lead_enrollments(NEW.tenant_id, NEW.lead_id, 'replied');
    end if;
  elsif NEW.sender = 'human'
        and exists (select 1 from app_public.leads l where l.tenant_id = NEW.tenant_id and l.id = NEW.lead_id and l.owner_user_id is not null)
        and coalesce((select bs.nurture_stop_on_human_contact from app_public.business_settings bs where bs.tenant_id = NEW.tenant_id), true) then
    perform app_private.stop_lead_enrollments(NEW.tenant_id, NEW.lead_id, 'human_contact');
  end if;
  return null;
end;
$$;
comment on function app_private.tg_messages__nurture_stop() is 'Trigger (_850_nurture_stop, after insert on messages): a text from the lead stops its enrollments in sequences with stop_on_reply (replied); a text from a person of the business to an assigned lead stops them (human_contact) when the tenant says nurture_stop_on_human_contact.';

create trigger _850_nurture_stop after insert on app_public.messages
  for each row when (NEW.direction = 'inbound' or NEW.sender = 'human') execute function app_private.tg_messages__nurture_stop();

create function app_private.tg_dnc_list__nurture_stop() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_lead uuid;
begin
  for v_lead in select l.id from app_public.leads l where l.tenant_id = NEW.tenant_id and l.phone = NEW.phone loop
    perform app_private.stop_lead_enrollments(NEW.tenant_id, v_lead, case when NEW.source = 'sms_opt_out' then 'opted_out' else 'dnc' end);
  end loop;
  return null;
end;
$$;
comment on function app_private.tg_dnc_list__nurture_stop() is 'Trigger (_600_nurture_stop, after insert on dnc_list): every enrollment of a lead with that number stops, as opted_out (the lead texted STOP) or dnc (put on the list).';

create trigger _600_nurture_stop after insert on app_public.dnc_list
  for each row execute function app_private.tg_dnc_list__nurture_stop();

create function app_private.tg_email_suppressions__nurture_stop() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_lead uuid;
begin
  for v_lead in select l.id from app_public.leads l where l.tenant_id = NEW.tenant_id and l.email = NEW.email loop
    perform app_private.stop_lead_enrollments(NEW.tenant_id, v_lead, 'unsubscribed');
  end loop;
  return null;
end;
$$;
comment on function app_private.tg_email_suppressions__nurture_stop() is 'Trigger (_600_nurture_stop, after insert on email_suppressions): every enrollment of a lead with that address stops (unsubscribed).';

create trigger _600_nurture_stop after insert on app_public.email_suppressions
  for each row execute function app_private.tg_email_suppressions__nurture_stop();

--------------------------------------------------------------------------------
-- The API
--------------------------------------------------------------------------------

create function app_public.enroll_lead_in_sequence(sequence_id uuid, lead_id uuid) returns app_public.lead_sequence_enrollments
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('agent', 'enroll leads in nurture sequences');
  v_enrollment app_public.lead_sequence_enrollments;
begin
  v_enrollment := app_private.enroll_lead(v_tenant_id, enroll_lead_in_sequence.sequence_id, enroll_lead_in_sequence.lead_id,
    'manual', app_public.current_user_id());
  if v_enrollment.id is null then
    raise exception 'This lead is already in this sequence: unenroll it first to start again' using errcode = '23505';
  end if;
  return v_enrollment;
end;
$$;
comment on function app_public.enroll_lead_in_sequence(uuid, uuid) is $$Enrolls a lead in an active sequence (any member); its first step is scheduled at once. Errors: 23505 the lead is already in it; 22023 the sequence is paused or archived, or the lead has a final status; SB001 the lead is on the do-not-contact list; P0002 no such sequence or lead; 42501 not a member.$$;
grant execute on function app_public.enroll_lead_in_sequence(uuid, uuid) to :DATABASE_VISITOR;

create function app_public.enroll_segment_in_sequence(sequence_id uuid, segment_id uuid default null) returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('agent', 'enroll leads in nurture sequences');
  v_segment app_public.segments;
  v_lead uuid;
  v_count integer := 0;
  f app_hidden.lead_filter;
begin
  select sg.* into v_segment from app_public.segments sg
  where sg.tenant_id = v_tenant_id
    and sg.id = coalesce(enroll_segment_in_sequence.segment_id,
      (select s.enroll_segment_id from app_public.nurture_sequences s where s.tenant_id = v_tenant_id and s.id = enroll_segment_in_sequence.sequence_id));
  if not found then
    raise exception 'No segment to enroll: give segment_id, or set the enroll segment of the sequence' using errcode = 'P0002';
  end if;
  f := app_hidden.parse_lead_filter(v_segment.filter);
  for v_lead in
    execute pg_catalog.format('select l.id from app_public.leads l where %s order by l.created_at, l.id', app_hidden.lead_filter_where(f))
    using v_tenant_id, f.status, f.status_not, f.tags_any, f.tags_all, f.score_min, f.score_max, f.source,
      pg_catalog.now() - pg_catalog.make_interval(days => f.created_within_days),
      case when f.created_from is not null then app_hidden.tenant_day_start(v_tenant_id, f.created_from) end,
      case when f.created_to is not null then app_hidden.tenant_day_start(v_tenant_id, f.created_to + 1) end,
      f.city, f.region, f.owner_user_id,
      '%' || app_hidden.like_escape(f.text) || '%',
      '%' || app_hidden.phone_search_digits(f.text) || '%'
  loop
    begin
      if (app_private.enroll_lead(v_tenant_id, enroll_segment_in_sequence.sequence_id, v_lead, 'segment', app_public.current_user_id())).id is not null then
        v_count := v_count + 1;
      end if;
    exception when sqlstate 'SB001' then
      null;  -- on the do-not-contact list: left out
    when sqlstate '22023' then
      if not exists (select 1 from app_public.nurture_sequences s where s.tenant_id = v_tenant_id and s.id = enroll_segment_in_sequence.sequence_id and s.status = 'active') then
        raise;
      end if;
      -- a lead with a final status: left out
    end;
  end loop;
  return v_count;
end;
$$;
comment on function app_public.enroll_segment_in_sequence(uuid, uuid) is $$Enrolls every lead that matches the segment now (default: the enroll segment of the sequence) and returns how many were enrolled; leads already in the sequence, on the do-not-contact list or with a final status are left out. To also enroll leads as they come to match, set enroll_new_segment_matches on the sequence. Errors: P0002 no such segment or sequence; 22023 the sequence is paused or archived; 42501 not a member.$$;
grant execute on function app_public.enroll_segment_in_sequence(uuid, uuid) to :DATABASE_VISITOR;

create function app_public.unenroll_lead_from_sequence(enrollment_id uuid) returns app_public.lead_sequence_enrollments
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('agent', 'unenroll leads from nurture sequences');
  v_enrollment app_public.lead_sequence_enrollments;
begin
  select e.* into v_enrollment from app_public.lead_sequence_enrollments e
  where e.tenant_id = v_tenant_id and e.id = unenroll_lead_from_sequence.enrollment_id;
  if not found then
    raise exception 'No enrollment % in this tenant', unenroll_lead_from_sequence.enrollment_id using errcode = 'P0002';
  end if;
  if not app_private.stop_enrollment(v_enrollment.id, 'unenrolled') then
    raise exception 'This enrollment is already %', v_enrollment.status using errcode = '22023';
  end if;
  select e.* into v_enrollment from app_public.lead_sequence_enrollments e where e.id = v_enrollment.id;
  return v_enrollment;
end;
$$;
comment on function app_public.unenroll_lead_from_sequence(uuid) is $$Stops an active enrollment (any member): no further step runs and what it queued and is still waiting is canceled. Errors: 22023 it is already completed or stopped; P0002 no such enrollment; 42501 not a member.$$;
grant execute on function app_public.unenroll_lead_from_sequence(uuid) to :DATABASE_VISITOR;

create function app_public.preview_nurture_step(sequence_id uuid, lead_id uuid, step_number integer default 1)
  returns table (channel text, subject text, body text)
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('agent', 'preview nurture steps');
  v_step jsonb;
begin
  select s.steps -> (preview_nurture_step.step_number - 1) into v_step from app_public.nurture_sequences s
  where s.tenant_id = v_tenant_id and s.id = preview_nurture_step.sequence_id;
  if v_step is null then
    raise exception 'No step % in sequence % of this tenant', preview_nurture_step.step_number, preview_nurture_step.sequence_id using errcode = 'P0002';
  end if;
  if not exists (select 1 from app_public.leads l where l.tenant_id = v_tenant_id and l.id = preview_nurture_step.lead_id) then
    raise exception 'No lead % in this tenant', preview_nurture_step.lead_id using errcode = 'P0002';
  end if;
  return query select v_step ->> 'channel',
    case when v_step ? 'subject' then app_private.render_nurture_template(v_step ->> 'subject', v_tenant_id, preview_nurture_step.lead_id) end,
    app_private.render_nurture_template(v_step ->> 'template', v_tenant_id, preview_nurture_step.lead_id);
end;
$$;
comment on function app_public.preview_nurture_step(uuid, uuid, integer) is 'What a step of the current version of a sequence would send to a lead, rendered (nothing is sent). Errors: P0002 no such sequence, step or lead; 42501 not a member.';
grant execute on function app_public.preview_nurture_step(uuid, uuid, integer) to :DATABASE_VISITOR;

--------------------------------------------------------------------------------
-- Statistics
--------------------------------------------------------------------------------

create type app_public.nurture_sequence_stats as (
  enrolled integer,
  active integer,
  completed integer,
  stopped integer,
  stopped_by_reason jsonb,
  sent integer,
  delivered integer,
  failed integer,
  replied integer,
  opted_out integer
);
comment on type app_public.nurture_sequence_stats is 'How a sequence is doing, over all its versions.';
comment on column app_public.nurture_sequence_stats.enrolled is 'Enrollments ever.';
comment on column app_public.nurture_sequence_stats.active is 'Enrollments still running.';
comment on column app_public.nurture_sequence_stats.completed is 'Enrollments that ran every step.';
comment on column app_public.nurture_sequence_stats.stopped is 'Enrollments stopped before the end.';
comment on column app_public.nurture_sequence_stats.stopped_by_reason is 'Stopped enrollments per reason, e.g. {"replied": 4, "unsubscribed": 1}.';
comment on column app_public.nurture_sequence_stats.sent is 'Texts and emails handed to the provider (sent, delivered or undelivered texts; sent emails).';
comment on column app_public.nurture_sequence_stats.delivered is 'Texts the carrier reported delivered (email has no delivery report: see sent).';
comment on column app_public.nurture_sequence_stats.failed is 'Texts and emails that failed or were undelivered.';
comment on column app_public.nurture_sequence_stats.replied is 'Enrollments stopped because the lead replied.';
comment on column app_public.nurture_sequence_stats.opted_out is 'Enrollments stopped because the lead opted out (STOP), unsubscribed, or was put on the do-not-contact list.';

create type app_public.nurture_step_stats as (
  version integer,
  step_number integer,
  channel text,
  ran integer,
  skipped integer,
  sent integer,
  delivered integer,
  failed integer,
  replied integer,
  opted_out integer
);
comment on type app_public.nurture_step_stats is 'How one step of one version is doing. A reply or an opt-out counts for the last step that ran before it.';
comment on column app_public.nurture_step_stats.version is 'The version of the sequence.';
comment on column app_public.nurture_step_stats.step_number is 'The step (1 = first).';
comment on column app_public.nurture_step_stats.channel is 'sms or email.';
comment on column app_public.nurture_step_stats.ran is 'Enrollments that reached this step.';
comment on column app_public.nurture_step_stats.skipped is 'Of those, how many skipped it (condition, no phone or email).';
comment on column app_public.nurture_step_stats.sent is 'Texts and emails of this step handed to the provider.';
comment on column app_public.nurture_step_stats.delivered is 'Texts of this step reported delivered.';
comment on column app_public.nurture_step_stats.failed is 'Texts and emails of this step that failed or were undelivered.';
comment on column app_public.nurture_step_stats.replied is 'Enrollments stopped by a reply after this step.';
comment on column app_public.nurture_step_stats.opted_out is 'Enrollments stopped by an opt-out, unsubscribe or do-not-contact after this step.';

create function app_public.nurture_sequences_step_stats(sequence app_public.nurture_sequences) returns setof app_public.nurture_step_stats
  language sql stable
  -- SECURITY INVOKER: row-level security decides what the caller counts.
  set search_path to pg_catalog, public, pg_temp
as $$
  select v.version, s.n::int, s.step ->> 'channel',
    count(r.id)::int,
    count(r.id) filter (where r.outcome = 'skipped')::int,
    (count(m.id) filter (where m.status in ('sent', 'delivered', 'undelivered')) + count(em.id) filter (where em.status = 'sent'))::int,
    count(m.id) filter (where m.status = 'delivered')::int,
    (count(m.id) filter (where m.status in ('failed', 'undelivered')) + count(em.id) filter (where em.status = 'failed'))::int,
    count(e.id) filter (where e.stop_reason = 'replied')::int,
    count(e.id) filter (where e.stop_reason in ('opted_out', 'unsubscribed', 'dnc'))::int
  from app_public.nurture_sequence_versions v
  cross join lateral pg_catalog.jsonb_array_elements(v.steps) with ordinality as s(step, n)
  left join app_public.nurture_step_runs r
    on r.tenant_id = v.tenant_id and r.sequence_id = v.sequence_id and r.version = v.version and r.step_number = s.n
  left join app_public.messages m on m.tenant_id = r.tenant_id and m.id = r.message_id
  left join app_public.email_messages em on em.tenant_id = r.tenant_id and em.id = r.email_message_id
  left join app_public.lead_sequence_enrollments e
    on e.tenant_id = r.tenant_id and e.id = r.enrollment_id and e.status = 'stopped' and e.current_step = r.step_number
  where v.tenant_id = sequence.tenant_id and v.sequence_id = sequence.id
  group by v.version, s.n, s.step
  order by v.version, s.n
$$;
grant execute on function app_public.nurture_sequences_step_stats(app_public.nurture_sequences) to :DATABASE_VISITOR;
comment on function app_public.nurture_sequences_step_stats(app_public.nurture_sequences) is 'Statistics per version and step of the sequence (its stepStats field): how many enrollments reached the step, skipped it, what its texts and emails became, and the replies and opt-outs that followed it.';

create function app_public.nurture_sequences_stats(sequence app_public.nurture_sequences) returns app_public.nurture_sequence_stats
  language sql stable
  -- SECURITY INVOKER: row-level security decides what the caller counts.
  set search_path to pg_catalog, public, pg_temp
as $$
  select
    (select count(*)::int from app_public.lead_sequence_enrollments e where e.tenant_id = sequence.tenant_id and e.sequence_id = sequence.id),
    (select count(*)::int from app_public.lead_sequence_enrollments e where e.tenant_id = sequence.tenant_id and e.sequence_id = sequence.id and e.status = 'active'),
    (select count(*)::int from app_public.lead_sequence_enrollments e where e.tenant_id = sequence.tenant_id and e.sequence_id = sequence.id and e.status = 'completed'),
    (select count(*)::int from app_public.lead_sequence_enrollments e where e.tenant_id = sequence.tenant_id and e.sequence_id = sequence.id and e.status = 'stopped'),
    (select coalesce(pg_catalog.jsonb_object_agg(r.stop_reason, r.n), '{}'::jsonb) from (
       select e.stop_reason, count(*)::int as n from app_public.lead_sequence_enrollments e
       where e.tenant_id = sequence.tenant_id and e.sequence_id = sequence.id and e.status = 'stopped'
       group by e.stop_reason) r),
    coalesce(pg_catalog.sum(st.sent), 0)::int, coalesce(pg_catalog.sum(st.delivered), 0)::int, coalesce(pg_catalog.sum(st.failed), 0)::int,
    coalesce(pg_catalog.sum(st.replied), 0)::int, coalesce(pg_catalog.sum(st.opted_out), 0)::int
  from app_public.nurture_sequences_step_stats(sequence) st
$$;
comment on function app_public.nurture_sequences_stats(app_public.nurture_sequences) is 'Statistics of the sequence (its stats field): enrollments by status and stop reason, texts and emails sent, delivered and failed, replies and opt-outs.';
grant execute on function app_public.nurture_sequences_stats(app_public.nurture_sequences) to :DATABASE_VISITOR;

-- The email claim also cancels nurture emails whose enrollment stopped or whose lead opted out.
create or replace function app_private.claim_outbound_email(email_id uuid, public_url text, message_id_domain text)
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
  -- A nurture email goes only while its lead may be nurtured: not after its enrollment stopped, not after
  -- an opt-out on either channel (a row a dead worker left in sending may come back here after that).
  if v_email.nurture_enrollment_id is not null
     and (exists (select 1 from app_public.lead_sequence_enrollments e where e.id = v_email.nurture_enrollment_id and e.status = 'stopped')
          or app_private.nurture_lead_opted_out(v_email.tenant_id, v_email.lead_id) is not null) then
    update app_public.email_messages e
    set status = 'canceled', failed_at = now(), error_message = 'Canceled: nurture stopped for this lead (checked again before sending)'
    where e.id = v_email.id;
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
comment on function app_private.claim_outbound_email(uuid, text, text) is $$Step 1 of sending (email__send), committed before the mail server is called: a queued email due by the clock becomes sending, gets its Message-ID (<id@message_id_domain>), and is returned ready to send: marketing and nurture emails with the footer and the signed one-click unsubscribe link under public_url. No row when it is not queued any more, not due yet (its job is moved), or its address unsubscribed since, or it is a nurture email whose enrollment stopped or whose lead opted out on either channel (canceled).$$;

-- Test and demo sequences start years ahead (fixed dates around a DST change): allow moves of up to ten years.
create or replace function app_private.advance_clock(tenant_id uuid, by_interval interval) returns timestamptz
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if advance_clock.by_interval is null or advance_clock.by_interval <= interval '0' or advance_clock.by_interval > interval '3650 days' then
    raise exception 'The clock only moves forward, by more than nothing and at most 3650 days (ten years) at a time' using errcode = '22023';
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
comment on function app_private.advance_clock(uuid, interval) is 'Moves the clock of one tenant forward (tests and demos: time travel without sleeping, other tenants stay on real time) and wakes what became due. Owner role only. Returns the new clock time of the tenant. Errors: 22023 not forward, or more than 3650 days; P0002 no such tenant.';

--------------------------------------------------------------------------------
-- The lead timeline shows texts, emails and nurture events too
--------------------------------------------------------------------------------

create or replace function app_public.lead_timeline(lead_id uuid) returns setof app_public.lead_timeline_event
  language sql stable
  -- SECURITY INVOKER: row-level security decides what the caller sees.
  set search_path to pg_catalog, public, pg_temp
as $$
  -- One branch per source; a new source (messages, calls, routing decisions) is one more UNION ALL
  -- branch with the same columns. source_order and seq only break ties between equal times.
  select e.occurred_at, e.event_type, e.summary, e.details, e.actor_user_id
  from (
    -- Audit log: creation, field changes, deletion and restoration. Status, score and owner
    -- changes have their own, richer branches below.
    select a.changed_at as occurred_at, 1 as source_order, a.id as seq,
      case
        when a.field_name = '*created*' then 'created'
        when a.field_name = '*deleted*' or (a.field_name = 'deleted_at' and a.new_value is not null) then 'deleted'
        when a.field_name = '*restored*' or a.field_name = 'deleted_at' then 'restored'
        else 'field_changed'
      end as event_type,
      case
        when a.field_name = '*created*' then 'Lead created'
        when a.field_name = '*deleted*' or (a.field_name = 'deleted_at' and a.new_value is not null) then 'Lead deleted'
        when a.field_name = '*restored*' or a.field_name = 'deleted_at' then 'Lead restored'
        when a.old_value is null then
          pg_catalog.initcap(pg_catalog.left(pg_catalog.replace(a.field_name, '_', ' '), 1))
          || pg_catalog.substr(pg_catalog.replace(a.field_name, '_', ' '), 2)
          || ' set to ' || app_hidden.lead_timeline_value(a.new_value)
        when a.new_value is null then
          pg_catalog.initcap(pg_catalog.left(pg_catalog.replace(a.field_name, '_', ' '), 1))
          || pg_catalog.substr(pg_catalog.replace(a.field_name, '_', ' '), 2)
          || ' cleared (was ' || app_hidden.lead_timeline_value(a.old_value) || ')'
        else
          pg_catalog.initcap(pg_catalog.left(pg_catalog.replace(a.field_name, '_', ' '), 1))
          || pg_catalog.substr(pg_catalog.replace(a.field_name, '_', ' '), 2)
          || ' changed from ' || app_hidden.lead_timeline_value(a.old_value)
          || ' to ' || app_hidden.lead_timeline_value(a.new_value)
      end
      || case when a.change_source <> 'manual' then ' (' || a.change_source || ')' else '' end as summary,
      pg_catalog.jsonb_build_object('field', a.field_name, 'old_value', a.old_value, 'new_value', a.new_value,
        'change_source', a.change_source, 'api_key_id', a.changed_by_api_key_id) as details,
      a.changed_by_user_id as actor_user_id
    from app_public.lead_audit_log a
    where a.lead_id = lead_timeline.lead_id
      and a.field_name not in ('status', 'lead_score', 'lead_score_factors', 'owner_user_id')

    union all

    select s.changed_at, 2, s.id,
      'status_changed',
      case when s.from_status is null then 'Status set to ' || s.to_status
           else 'Status changed from ' || s.from_status || ' to ' || s.to_status end
      || case when s.trigger_type <> 'manual' then ' (' || s.trigger_type || ')' else '' end,
      pg_catalog.jsonb_build_object('from_status', s.from_status, 'to_status', s.to_status, 'trigger_type', s.trigger_type),
      s.changed_by_user_id
    from app_public.lead_status_history s
    where s.lead_id = lead_timeline.lead_id

    union all

    select sc.calculated_at, 3, sc.id,
      'score_changed',
      case
        when sc.previous_score is null then 'Score set to ' || sc.score
        when sc.previous_score = sc.score then 'Score factors updated (score stays ' || sc.score || ')'
        else 'Score changed from ' || sc.previous_score || ' to ' || sc.score
      end,
      pg_catalog.jsonb_build_object('score', sc.score, 'previous_score', sc.previous_score, 'factors', sc.factors),
      null::uuid
    from (
      select h.*, pg_catalog.lag(h.score) over (order by h.calculated_at, h.id) as previous_score
      from app_public.lead_score_history h
      where h.lead_id = lead_timeline.lead_id
    ) sc

    union all

    select g.assigned_at, 4, g.id,
      'assigned',
      case
        when g.from_user_id is null then 'Assigned to ' || app_hidden.lead_timeline_member_name(g.tenant_id, g.to_user_id)
        when g.to_user_id is null then 'Unassigned from ' || app_hidden.lead_timeline_member_name(g.tenant_id, g.from_user_id)
        else 'Reassigned from ' || app_hidden.lead_timeline_member_name(g.tenant_id, g.from_user_id)
          || ' to ' || app_hidden.lead_timeline_member_name(g.tenant_id, g.to_user_id)
      end
      || case when g.strategy <> 'manual' then ' (' || pg_catalog.replace(g.strategy, '_', ' ') || ')' else '' end
      || coalesce(': ' || g.reason, ''),
      pg_catalog.jsonb_build_object('from_user_id', g.from_user_id, 'to_user_id', g.to_user_id,
        'strategy', g.strategy, 'reason', g.reason),
      g.assigned_by_user_id
    from app_public.lead_assignments g
    where g.lead_id = lead_timeline.lead_id

    union all

    -- Texts to and from the lead.
    select coalesce(m.sent_at, m.created_at), 5, 0::bigint,
      case when m.direction = 'inbound' then 'sms_received' else 'sms_sent' end,
      case when m.direction = 'inbound' then 'Text received: '
           else 'Text ' || case m.status when 'queued' then 'queued' when 'sending' then 'sending' when 'canceled' then 'canceled'
                                         when 'failed' then 'failed' when 'undelivered' then 'undelivered' else 'sent' end
                || case when m.purpose in ('marketing', 'nurture', 'notification', 'auto_response') then ' (' || pg_catalog.replace(m.purpose, '_', ' ') || ')' else '' end
                || ': ' end
      || pg_catalog.left(m.body, 80) || case when pg_catalog.length(m.body) > 80 then '…' else '' end,
      pg_catalog.jsonb_build_object('message_id', m.id, 'direction', m.direction, 'status', m.status, 'purpose', m.purpose,
        'sender', m.sender, 'nurture_enrollment_id', m.nurture_enrollment_id, 'nurture_step', m.nurture_step),
      null::uuid
    from app_public.messages m
    where m.lead_id = lead_timeline.lead_id

    union all

    -- Emails to the lead.
    select coalesce(em.sent_at, em.created_at), 6, 0::bigint,
      'email_sent',
      'Email ' || case em.status when 'sent' then 'sent' else em.status end
      || case when em.purpose <> 'transactional' then ' (' || em.purpose || ')' else '' end || ': ' || em.subject,
      pg_catalog.jsonb_build_object('email_message_id', em.id, 'status', em.status, 'purpose', em.purpose,
        'nurture_enrollment_id', em.nurture_enrollment_id, 'nurture_step', em.nurture_step),
      null::uuid
    from app_public.email_messages em
    where em.lead_id = lead_timeline.lead_id and em.user_id is null

    union all

    -- Nurture: enrolled, each step, completed or stopped (times on the clock of the tenant).
    select x.occurred_at, 7, x.seq, x.event_type, x.summary, x.details, x.actor_user_id
    from app_public.lead_sequence_enrollments e
    join app_public.nurture_sequences s on s.tenant_id = e.tenant_id and s.id = e.sequence_id
    cross join lateral (
      select e.enrolled_at as occurred_at, 0::bigint as seq, 'nurture_enrolled' as event_type,
        'Enrolled in nurture sequence "' || s.name || '"' || case when e.enrolled_via <> 'manual' then ' (' || pg_catalog.replace(e.enrolled_via, '_', ' ') || ')' else '' end as summary,
        pg_catalog.jsonb_build_object('enrollment_id', e.id, 'sequence_id', s.id, 'version', e.version, 'enrolled_via', e.enrolled_via) as details,
        e.enrolled_by_user_id as actor_user_id
      union all
      select e.completed_at, 1000000::bigint, 'nurture_completed', 'Completed nurture sequence "' || s.name || '"',
        pg_catalog.jsonb_build_object('enrollment_id', e.id, 'sequence_id', s.id), null::uuid
      where e.status = 'completed'
      union all
      select e.stopped_at, 1000000::bigint, 'nurture_stopped',
        'Nurture sequence "' || s.name || '" stopped: ' || pg_catalog.replace(e.stop_reason, '_', ' '),
        pg_catalog.jsonb_build_object('enrollment_id', e.id, 'sequence_id', s.id, 'stop_reason', e.stop_reason, 'after_step', e.current_step), null::uuid
      where e.status = 'stopped'
      union all
      select r.ran_at, r.step_number::bigint, 'nurture_step',
        'Nurture "' || s.name || '" step ' || r.step_number || ' (' || r.channel || ') '
        || case when r.outcome = 'skipped' then 'skipped: ' || pg_catalog.replace(r.skip_reason, '_', ' ') else 'queued' end,
        pg_catalog.jsonb_build_object('enrollment_id', e.id, 'step_number', r.step_number, 'channel', r.channel, 'outcome', r.outcome,
          'skip_reason', r.skip_reason, 'message_id', r.message_id, 'email_message_id', r.email_message_id), null::uuid
      from app_public.nurture_step_runs r
      where r.tenant_id = e.tenant_id and r.enrollment_id = e.id
    ) x
    where e.lead_id = lead_timeline.lead_id
  ) e
  order by e.occurred_at, e.source_order, e.seq;
$$;
comment on function app_public.lead_timeline(uuid) is $$Everything that happened to a lead, oldest first: creation, field changes, status, score, owner changes, deletion and restoration, texts sent and received, emails sent, and nurture enrollments with each step, completion or stop. Row-level security applies: you see the timeline of leads of your current tenant.$$;

comment on column app_public.lead_timeline_event.event_type is 'What kind of event: created, field_changed, deleted, restored, status_changed, score_changed, assigned, sms_sent, sms_received, email_sent, nurture_enrolled, nurture_step, nurture_completed or nurture_stopped.';
