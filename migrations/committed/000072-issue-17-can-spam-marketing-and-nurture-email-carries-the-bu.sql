--! Previous: sha1:b5232daa8de17557ba96e8dea1830d117dee9f6f
--! Hash: sha1:7d15dcaad4432269bd8779a80cc8210b4ab7c316
--! Message: Issue 17, CAN-SPAM: marketing and nurture email carries the business's postal address in its footer, and a business without one sends none (55000 when queued; canceled at the claim if it was removed since; a nurture email step is skipped as no_postal_address)

comment on column app_public.tenants.business_address is 'The business’s postal address (street, city, state, ZIP). Every marketing or nurture email carries it (CAN-SPAM, 16 CFR 316.5): without it the business sends none.';
alter table app_public.nurture_step_runs drop constraint if exists nurture_step_runs_skip_reason_must_be_known;
alter table app_public.nurture_step_runs add constraint nurture_step_runs_skip_reason_must_be_known
  check (skip_reason in ('condition', 'no_phone', 'no_email', 'no_sending_number', 'no_postal_address'));
comment on column app_public.nurture_step_runs.skip_reason is 'Why it was skipped: condition (skip_if matched), no_phone, no_email, no_sending_number, or no_postal_address (an email step of a business without a postal address, which CAN-SPAM requires).';

--! Included messaging/tenant_postal_address.sql
create or replace function app_private.tenant_postal_address(tenant_id uuid) returns text
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select nullif(pg_catalog.btrim(t.business_address), '') from app_public.tenants t where t.id = tenant_postal_address.tenant_id;
$$;

comment on function app_private.tenant_postal_address(uuid) is $$The postal address a commercial email of this tenant must carry (tenants.business_address, trimmed), or null when the tenant has none: then it sends no marketing or nurture email (CAN-SPAM, 16 CFR 316.5).$$;
--! EndIncluded messaging/tenant_postal_address.sql
--! Included messaging/tg_email_messages__guard_outbound.sql
create or replace function app_private.tg_email_messages__guard_outbound() returns trigger
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
  -- CAN-SPAM (15 U.S.C. 7704(a)(5)(A)(iii), 16 CFR 316.5): a commercial email carries the sender's valid
  -- physical postal address; claim_outbound_email puts it in the footer.
  if NEW.purpose in ('marketing', 'nurture') and app_private.tenant_postal_address(NEW.tenant_id) is null then
    raise exception 'Not sent: a marketing email must carry the postal address of the business (CAN-SPAM); set it first (updateTenant, businessAddress)'
      using errcode = '55000';
  end if;
  return NEW;
end;
$$;

comment on function app_private.tg_email_messages__guard_outbound() is $$Trigger (_200_guard_outbound, before insert on email_messages): an address that unsubscribed or is suppressed gets nothing but transactional email, and a lead marked do-not-contact gets no marketing or nurture email (SB001); a business without a postal address sends no marketing or nurture email (55000: CAN-SPAM requires it in every commercial email, and claim_outbound_email prints it in the footer).$$;
--! EndIncluded messaging/tg_email_messages__guard_outbound.sql
--! Included messaging/claim_outbound_email.sql
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
  if v_email.purpose in ('marketing', 'nurture') and app_private.tenant_postal_address(v_email.tenant_id) is null then
    update app_public.email_messages e
    set status = 'canceled', failed_at = now(), error_message = 'Canceled: the business has no postal address any more, which a marketing email must carry (CAN-SPAM)'
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
    -- The postal address CAN-SPAM requires, on its own line under the business name (the guard refused
    -- the email without one; one removed since is checked before this email is claimed, above).
    v_business := coalesce(v_business, '') || E'\n' || coalesce(app_private.tenant_postal_address(v_email.tenant_id), '');
    v_url := pg_catalog.rtrim(claim_outbound_email.public_url, '/') || '/email/unsubscribe/' || app_private.email_unsubscribe_token(v_email.id);
    v_text := v_text || E'\n\n--\n' || coalesce(v_business, '') || E'\nYou receive this email because you contacted us. To receive no more, unsubscribe: ' || v_url || E'\n';
    if v_html is not null then
      v_html := v_html || '<p style="font-size:12px;color:#666">' || pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
          coalesce(v_business, ''), '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), E'\n', '<br>')
        || '<br>You receive this email because you contacted us. <a href="' || v_url || '">Unsubscribe</a></p>';
    end if;
  end if;
  return query select v_email.id, v_email.message_id_header, v_email.from_name, v_email.from_email::text, v_email.reply_to::text,
    v_email.to_email::text, v_email.subject, v_text, v_html, v_url;
end;
$$;

comment on function app_private.claim_outbound_email(uuid, text, text) is $$Step 1 of sending (email__send), committed before the mail server is called: a queued email due by the clock becomes sending, gets its Message-ID (<id@message_id_domain>), and is returned ready to send: marketing and nurture emails with the footer (the business name, its postal address, and the signed one-click unsubscribe link under public_url). No row when it is not queued any more, not due yet (its job is moved), or its address unsubscribed since, or (marketing and nurture) the business has no postal address any more, or it is a nurture email whose enrollment stopped or whose lead opted out on either channel (canceled).$$;
--! EndIncluded messaging/claim_outbound_email.sql
--! Included nurture/run_nurture_step.sql
create or replace function app_private.run_nurture_step(enrollment_id uuid, step_number integer) returns text
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
  elsif v_channel = 'email' and app_private.tenant_postal_address(v_enrollment.tenant_id) is null then
    v_skip := 'no_postal_address';  -- CAN-SPAM: no commercial email without the sender's postal address
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

comment on function app_private.run_nurture_step(uuid, integer) is $$Runs one step of one enrollment, once (run by the nurture__run_step job; the enrollment row is locked, and the step must be the one due): renders the template, queues the text or email in its outbox with the key nurture:<enrollment>:<step> (the outbox rules apply: do-not-contact, suppression, legal hours, daily caps), records the run, and plans the next step. Returns queued, skipped (skip_if matched, or no phone, email or texting number, or an email step of a business without a postal address), moved (outside the sending window: waits for it), stopped (the lead was deleted, reached a final status, opted out or unsubscribed), not_due, paused, stale (another run got there first), not_active or missing.$$;
--! EndIncluded nurture/run_nurture_step.sql
